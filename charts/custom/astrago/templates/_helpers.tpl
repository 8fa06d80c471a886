{{/*
Chart name, truncated to 63 chars (DNS label limit).
*/}}
{{- define "astrago.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Fully qualified app name. Truncated so that "<fullname>-<component>" stays a valid DNS label.
*/}}
{{- define "astrago.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 50 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 50 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 50 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Chart name and version for the helm.sh/chart label.
*/}}
{{- define "astrago.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Common labels.
*/}}
{{- define "astrago.labels" -}}
helm.sh/chart: {{ include "astrago.chart" . }}
{{ include "astrago.selectorLabels" . }}
{{- if .Chart.AppVersion }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: astrago
{{- end }}

{{/*
Selector labels.
*/}}
{{- define "astrago.selectorLabels" -}}
app.kubernetes.io/name: {{ include "astrago.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
Per-component resource name. Usage: include "astrago.componentName" (dict "root" $ "component" "core")
*/}}
{{- define "astrago.componentName" -}}
{{- printf "%s-%s" (include "astrago.fullname" .root) .component | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Per-component labels / selector labels. Usage: (dict "root" $ "component" "core")
*/}}
{{- define "astrago.componentLabels" -}}
{{ include "astrago.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "astrago.componentSelectorLabels" -}}
{{ include "astrago.selectorLabels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/*
ServiceAccount name.
*/}}
{{- define "astrago.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "astrago.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
Image reference. Usage: include "astrago.image" (dict "image" .Values.core.image "root" $)
Returns REGISTRY/REPOSITORY:TAG where REGISTRY is offline.registry when non-empty, else the image's
own registry; with no registry at all, REPOSITORY:TAG. Only the registry host is ever replaced.
*/}}
{{- define "astrago.image" -}}
{{- $image := .image -}}
{{- $offline := .root.Values.offline | default dict -}}
{{- $registry := default ($image.registry | default "") ($offline.registry | default "") | trimSuffix "/" -}}
{{- $repository := required "image.repository is required" $image.repository -}}
{{- $tag := required (printf "image.tag is required for %s" $repository) ($image.tag | toString) -}}
{{- if $registry -}}
{{- printf "%s/%s:%s" $registry $repository $tag -}}
{{- else -}}
{{- printf "%s:%s" $repository $tag -}}
{{- end -}}
{{- end }}

{{/*
imagePullSecrets block for pod specs (accepts names or {name: ...} objects).
*/}}
{{- define "astrago.imagePullSecrets" -}}
{{- if .Values.imagePullSecrets -}}
imagePullSecrets:
{{- range .Values.imagePullSecrets }}
{{- if kindIs "string" . }}
  - name: {{ . | quote }}
{{- else }}
  - name: {{ .name | quote }}
{{- end }}
{{- end }}
{{- end -}}
{{- end }}

{{/*
In-cluster base URL of a component's Service. Usage: (dict "root" $ "component" "core")
*/}}
{{- define "astrago.serviceUrl" -}}
{{- $c := index .root.Values .component -}}
{{- printf "http://%s.%s.svc:%v" (include "astrago.componentName" .) .root.Release.Namespace $c.service.port -}}
{{- end }}

{{/*
Name of the data PVC mounted into core/batch.
*/}}
{{- define "astrago.dataClaimName" -}}
{{- if .Values.persistence.existingClaim }}
{{- .Values.persistence.existingClaim }}
{{- else }}
{{- printf "%s-data" (include "astrago.fullname" .) }}
{{- end }}
{{- end }}

{{/*
Public URL of the UI (NEXTAUTH_URL): frontend.publicUrl, else derived from the ingress host.
*/}}
{{- define "astrago.publicUrl" -}}
{{- if .Values.frontend.publicUrl }}
{{- .Values.frontend.publicUrl | trimSuffix "/" }}
{{- else if and .Values.ingress.enabled .Values.ingress.host }}
{{- printf "%s://%s" (ternary "https" "http" .Values.ingress.tls.enabled) .Values.ingress.host }}
{{- end }}
{{- end }}

{{/*
Fail early when a Secret reference needed by an enabled component is missing.
Usage: include "astrago.requireSecret" (list "<secret name>" "<values path>" "<component>")
*/}}
{{- define "astrago.requireSecret" -}}
{{- $name := index . 0 -}}
{{- $path := index . 1 -}}
{{- $component := index . 2 -}}
{{- if not $name -}}
{{- fail (printf "%s must name an existing Secret because %s is enabled (credentials are only read from Secrets)" $path $component) -}}
{{- end -}}
{{- end }}

{{/*
Environment for a component. Usage: include "astrago.env" (dict "root" $ "component" "core")
*/}}
{{- define "astrago.env" -}}
{{- $root := .root -}}
{{- $v := $root.Values -}}
{{- $component := .component -}}
{{- $c := index $v $component -}}
{{- $kc := $v.keycloak -}}
{{- $kcUrl := $kc.url | trimSuffix "/" -}}
{{- $kcInternal := default $kcUrl ($kc.internalUrl | trimSuffix "/") -}}
{{- include "astrago.requireSecret" (list $kc.clientSecret.existingSecret "keycloak.clientSecret.existingSecret" $component) -}}
{{- with $v.timezone }}
- name: TZ
  value: {{ . | quote }}
{{- end }}
{{- if eq $component "frontend" }}
{{- include "astrago.requireSecret" (list $c.nextAuthSecret.existingSecret "frontend.nextAuthSecret.existingSecret" $component) }}
- name: KEYCLOAK_HOST
  value: {{ $kcUrl | quote }}
- name: KEYCLOAK_REALM
  value: {{ $kc.realm | quote }}
# Spelling expected by the upstream frontend image.
- name: KEYCLOAK_REALME
  value: {{ $kc.realm | quote }}
- name: KEYCLOAK_CLIENT_ID
  value: {{ $kc.clientId | quote }}
- name: AUTH_CLIENT_SECRET
  valueFrom:
    secretKeyRef:
      name: {{ $kc.clientSecret.existingSecret | quote }}
      key: {{ $kc.clientSecret.key | quote }}
- name: NEXTAUTH_SECRET
  valueFrom:
    secretKeyRef:
      name: {{ $c.nextAuthSecret.existingSecret | quote }}
      key: {{ $c.nextAuthSecret.key | quote }}
{{- with (include "astrago.publicUrl" $root) }}
- name: NEXTAUTH_URL
  value: {{ . | quote }}
{{- end }}
- name: NEXT_PUBLIC_API_MOCKING
  value: "disabled"
{{- if $v.core.enabled }}
- name: NEXT_PUBLIC_API_URL
  value: {{ include "astrago.serviceUrl" (dict "root" $root "component" "core") | quote }}
- name: NEXT_PUBLIC_WEBSOCKET_HOST
  value: {{ include "astrago.serviceUrl" (dict "root" $root "component" "core") | quote }}
{{- end }}
{{- if $v.batch.enabled }}
- name: NEXT_PUBLIC_BATCH_API_URL
  value: {{ include "astrago.serviceUrl" (dict "root" $root "component" "batch") | quote }}
{{- end }}
{{- if $v.monitor.enabled }}
- name: NEXT_PUBLIC_MONITOR_API_URL
  value: {{ include "astrago.serviceUrl" (dict "root" $root "component" "monitor") | quote }}
{{- end }}
{{- if $v.report.enabled }}
- name: NEXT_PUBLIC_REPORT_API_URL
  value: {{ include "astrago.serviceUrl" (dict "root" $root "component" "report") | quote }}
{{- end }}
{{- else }}
{{- include "astrago.requireSecret" (list $v.database.existingSecret "database.existingSecret" $component) }}
- name: SPRING_DATASOURCE_URL
  value: {{ printf "jdbc:mariadb://%s:%v/%s" $v.database.host $v.database.port $v.database.name | quote }}
- name: SPRING_DATASOURCE_USERNAME
  valueFrom:
    secretKeyRef:
      name: {{ $v.database.existingSecret | quote }}
      key: {{ $v.database.usernameKey | quote }}
- name: SPRING_DATASOURCE_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ $v.database.existingSecret | quote }}
      key: {{ $v.database.passwordKey | quote }}
- name: KEYCLOAK_AUTH-SERVER-URL
  value: {{ $kcInternal | quote }}
- name: KEYCLOAK_REALM
  value: {{ $kc.realm | quote }}
- name: KEYCLOAK_RESOURCE
  value: {{ $kc.clientId | quote }}
- name: KEYCLOAK_CREDENTIALS_SECRET
  valueFrom:
    secretKeyRef:
      name: {{ $kc.clientSecret.existingSecret | quote }}
      key: {{ $kc.clientSecret.key | quote }}
- name: SPRING_SECURITY_OAUTH2_RESOURCE-SERVER_JWT_ISSUER-URI
  value: {{ printf "%s/realms/%s" $kcUrl $kc.realm | quote }}
- name: SPRING_SECURITY_OAUTH2_RESOURCE-SERVER_JWT_JWK-SET-URI
  value: {{ printf "%s/realms/%s/protocol/openid-connect/certs" $kcInternal $kc.realm | quote }}
{{- if has $component (list "core" "batch") }}
{{- include "astrago.requireSecret" (list $kc.admin.existingSecret "keycloak.admin.existingSecret" $component) }}
- name: ADMIN_NAME
  valueFrom:
    secretKeyRef:
      name: {{ $kc.admin.existingSecret | quote }}
      key: {{ $kc.admin.usernameKey | quote }}
- name: ADMIN_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ $kc.admin.existingSecret | quote }}
      key: {{ $kc.admin.passwordKey | quote }}
{{- if $kc.admin.initPasswordKey }}
- name: ADMIN_INIT-PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ $kc.admin.existingSecret | quote }}
      key: {{ $kc.admin.initPasswordKey | quote }}
{{- end }}
{{- end }}
{{- if has $component (list "core" "monitor" "report") }}
- name: PROMETHEUS_URL
  value: {{ $v.prometheus.url | quote }}
{{- end }}
{{- if eq $component "core" }}
- name: ASTRAGO_NAMESPACE
  value: {{ $root.Release.Namespace | quote }}
- name: ASTRAGO_DEPLOYMENT-NAME
  value: {{ include "astrago.componentName" (dict "root" $root "component" "core") | quote }}
{{- with $v.offline.registry }}
# Registry used for images of user workloads in offline installs.
- name: ASTRAGO_PRIVATE-REGISTRY-URL
  value: {{ . | quote }}
{{- end }}
{{- end }}
{{- range $other := list "core" "batch" "monitor" "report" }}
{{- if and (ne $other $component) (index $v $other).enabled }}
- name: {{ printf "ASTRAGO_%s_URL" (upper $other) }}
  value: {{ include "astrago.serviceUrl" (dict "root" $root "component" $other) | quote }}
{{- end }}
{{- end }}
{{- end }}
{{- range $c.extraEnv }}
- name: {{ .name | quote }}
  value: {{ .value | toString | quote }}
{{- end }}
{{- end }}

{{/*
Probe. Usage: include "astrago.probe" .Values.core.readinessProbe
*/}}
{{- define "astrago.probe" -}}
{{- if .path }}
httpGet:
  path: {{ .path | quote }}
  port: http
{{- else }}
tcpSocket:
  port: http
{{- end }}
initialDelaySeconds: {{ .initialDelaySeconds }}
periodSeconds: {{ .periodSeconds }}
timeoutSeconds: {{ .timeoutSeconds }}
failureThreshold: {{ .failureThreshold }}
{{- end }}
