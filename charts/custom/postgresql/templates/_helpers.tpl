{{/*
Chart name, truncated to 63 chars.
*/}}
{{- define "postgresql.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Fully qualified app name: the Service clients connect to. Truncated so that "<fullname>-hl"
(the headless Service) stays a valid DNS label.
*/}}
{{- define "postgresql.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 60 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 60 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 60 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Chart name and version for the helm.sh/chart label.
*/}}
{{- define "postgresql.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Common labels.
*/}}
{{- define "postgresql.labels" -}}
helm.sh/chart: {{ include "postgresql.chart" . }}
{{ include "postgresql.selectorLabels" . }}
{{- if .Chart.AppVersion }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: database
app.kubernetes.io/part-of: astrago
{{- end }}

{{/*
Selector labels.
*/}}
{{- define "postgresql.selectorLabels" -}}
app.kubernetes.io/name: {{ include "postgresql.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
Image reference. Usage: include "postgresql.image" (dict "image" .Values.image "root" $)
Returns REGISTRY/REPOSITORY:TAG where REGISTRY is offline.registry when non-empty, else the image's
own registry; with no registry at all, REPOSITORY:TAG. Only the registry host is ever replaced.
*/}}
{{- define "postgresql.image" -}}
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
imagePullSecrets block (accepts names or {name: ...} objects).
*/}}
{{- define "postgresql.imagePullSecrets" -}}
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
A probe running pg_isready inside the container. Usage:
include "postgresql.probe" (dict "probe" .Values.readinessProbe)
pg_isready asks the server whether it accepts connections; it needs no password.
*/}}
{{- define "postgresql.probe" -}}
exec:
  command:
    - /bin/sh
    - -c
    - exec pg_isready --quiet --host=127.0.0.1 --port=5432 --username="$POSTGRES_USER" --dbname="$POSTGRES_DB"
periodSeconds: {{ .probe.periodSeconds }}
timeoutSeconds: {{ .probe.timeoutSeconds }}
failureThreshold: {{ .probe.failureThreshold }}
{{- end }}
