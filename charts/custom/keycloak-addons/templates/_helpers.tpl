{{/*
Chart name, truncated to 63 chars.
*/}}
{{- define "keycloak-addons.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Fully qualified app name (labels only; the ConfigMap name comes from realmImport.configMapName).
*/}}
{{- define "keycloak-addons.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Chart name and version for the helm.sh/chart label.
*/}}
{{- define "keycloak-addons.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Common labels.
*/}}
{{- define "keycloak-addons.labels" -}}
helm.sh/chart: {{ include "keycloak-addons.chart" . }}
{{ include "keycloak-addons.selectorLabels" . }}
{{- if .Chart.AppVersion }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: astrago
{{- end }}

{{/*
Selector labels.
*/}}
{{- define "keycloak-addons.selectorLabels" -}}
app.kubernetes.io/name: {{ include "keycloak-addons.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
Image reference helper, kept for uniformity with the other Astrago charts (this chart renders no
images). Usage: include "keycloak-addons.image" (dict "image" .Values.x.image "root" $)
Returns REGISTRY/REPOSITORY:TAG, REGISTRY = offline.registry if set, else the image's registry.
*/}}
{{- define "keycloak-addons.image" -}}
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
Realm representation as a dict -> JSON. Everything is built as data and serialized with
toPrettyJson, so the output is always valid JSON.
*/}}
{{- define "keycloak-addons.realm" -}}
{{- $r := .Values.realm -}}
{{- $c := .Values.client -}}
{{- $defaultRoleName := printf "default-roles-%s" (lower $r.name) -}}

{{- /* Realm roles: Astrago roles + Keycloak built-ins + default-roles composite. */}}
{{- $known := list "offline_access" "uma_authorization" -}}
{{- $realmRoles := list -}}
{{- range $r.roles -}}
{{- $realmRoles = append $realmRoles (dict "name" .name "description" (.description | default "") "composite" false "clientRole" false) -}}
{{- $known = append $known .name -}}
{{- end -}}
{{- range $role := $r.defaultRoles -}}
{{- if not (has $role $known) -}}
{{- fail (printf "realm.defaultRoles: role %q is not defined in realm.roles" $role) -}}
{{- end -}}
{{- end -}}
{{- $realmRoles = append $realmRoles (dict "name" "offline_access" "description" "Offline access (Keycloak built-in)" "composite" false "clientRole" false) -}}
{{- $realmRoles = append $realmRoles (dict "name" "uma_authorization" "description" "UMA authorization (Keycloak built-in)" "composite" false "clientRole" false) -}}
{{- $defaultComposites := concat (list "offline_access" "uma_authorization") ($r.defaultRoles | default list) | uniq -}}
{{- $realmRoles = append $realmRoles (dict "name" $defaultRoleName "description" (printf "Default roles of realm %s" $r.name) "composite" true "clientRole" false "composites" (dict "realm" $defaultComposites)) -}}

{{- $clientRoles := list -}}
{{- range $c.roles -}}
{{- $clientRoles = append $clientRoles (dict "name" .name "description" (.description | default "") "composite" false "clientRole" true) -}}
{{- end -}}
{{- $roles := dict "realm" $realmRoles -}}
{{- if $clientRoles -}}
{{- $_ := set $roles "client" (dict $c.clientId $clientRoles) -}}
{{- end -}}

{{- /* Groups. */}}
{{- $groups := list -}}
{{- $groupNames := list -}}
{{- range $g := $r.groups -}}
{{- range $role := ($g.realmRoles | default list) -}}
{{- if not (has $role $known) -}}
{{- fail (printf "realm.groups[%s].realmRoles: role %q is not defined in realm.roles" $g.name $role) -}}
{{- end -}}
{{- end -}}
{{- $groups = append $groups (dict "name" $g.name "path" (printf "/%s" $g.name) "realmRoles" ($g.realmRoles | default list) "attributes" ($g.attributes | default dict) "subGroups" list) -}}
{{- $groupNames = append $groupNames $g.name -}}
{{- end -}}
{{- $defaultGroups := list -}}
{{- range $g := $r.defaultGroups -}}
{{- if not (has $g $groupNames) -}}
{{- fail (printf "realm.defaultGroups: group %q is not defined in realm.groups" $g) -}}
{{- end -}}
{{- $defaultGroups = append $defaultGroups (printf "/%s" $g) -}}
{{- end -}}

{{- /* Client. */}}
{{- $url := $c.url | default "" | trimSuffix "/" -}}
{{- $redirectUris := $c.redirectUris | default list -}}
{{- if and (not $redirectUris) $url -}}
{{- $redirectUris = list (printf "%s/*" $url) -}}
{{- end -}}
{{- $webOrigins := $c.webOrigins | default list -}}
{{- if not $webOrigins -}}
{{- $webOrigins = ternary (list $url) (list "+") (ne $url "") -}}
{{- end -}}
{{- $attributes := dict "post.logout.redirect.uris" ($c.postLogoutRedirectUris | default "+") -}}
{{- with $c.pkceMethod -}}
{{- $_ := set $attributes "pkce.code.challenge.method" . -}}
{{- end -}}
{{- $attributes = mergeOverwrite $attributes ($c.extraAttributes | default dict) -}}
{{- $client := dict
      "clientId" $c.clientId
      "name" ($c.name | default $c.clientId)
      "description" ($c.description | default "")
      "enabled" true
      "protocol" "openid-connect"
      "publicClient" false
      "bearerOnly" false
      "clientAuthenticatorType" "client-secret"
      "secret" (printf "${%s}" $c.secretEnvVar)
      "redirectUris" $redirectUris
      "webOrigins" $webOrigins
      "standardFlowEnabled" $c.standardFlowEnabled
      "implicitFlowEnabled" false
      "directAccessGrantsEnabled" $c.directAccessGrantsEnabled
      "serviceAccountsEnabled" $c.serviceAccountsEnabled
      "frontchannelLogout" true
      "fullScopeAllowed" true
      "attributes" $attributes -}}
{{- if $url -}}
{{- $_ := set $client "rootUrl" $url -}}
{{- $_ := set $client "baseUrl" "/" -}}
{{- end -}}
{{- with $c.protocolMappers -}}
{{- $_ := set $client "protocolMappers" . -}}
{{- end -}}

{{- $realm := dict
      "realm" $r.name
      "displayName" ($r.displayName | default $r.name)
      "enabled" $r.enabled
      "sslRequired" $r.sslRequired
      "registrationAllowed" $r.registrationAllowed
      "loginWithEmailAllowed" $r.loginWithEmailAllowed
      "duplicateEmailsAllowed" $r.duplicateEmailsAllowed
      "resetPasswordAllowed" $r.resetPasswordAllowed
      "rememberMe" $r.rememberMe
      "bruteForceProtected" $r.bruteForceProtected
      "roles" $roles
      "defaultRole" (dict "name" $defaultRoleName "composite" true "clientRole" false)
      "groups" $groups
      "defaultGroups" $defaultGroups
      "clients" (list $client) -}}
{{- with $r.loginTheme -}}
{{- $_ := set $realm "loginTheme" . -}}
{{- end -}}
{{- range $k, $v := ($r.tokens | default dict) -}}
{{- $_ := set $realm $k (int64 $v) -}}
{{- end -}}
{{- $realm = mergeOverwrite $realm ($r.extraSettings | default dict) -}}
{{- toPrettyJson $realm -}}
{{- end }}
