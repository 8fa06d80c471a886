{{/*
Chart name, truncated to 63 chars.
*/}}
{{- define "gpu-operator-addons.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Fully qualified app name (used for the instance labels only; ConfigMap names are fixed by values
because the GPU Operator references them by name).
*/}}
{{- define "gpu-operator-addons.fullname" -}}
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
{{- define "gpu-operator-addons.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Common labels.
*/}}
{{- define "gpu-operator-addons.labels" -}}
helm.sh/chart: {{ include "gpu-operator-addons.chart" . }}
{{ include "gpu-operator-addons.selectorLabels" . }}
{{- if .Chart.AppVersion }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: astrago
{{- end }}

{{/*
Selector labels.
*/}}
{{- define "gpu-operator-addons.selectorLabels" -}}
app.kubernetes.io/name: {{ include "gpu-operator-addons.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
Image reference helper, kept for uniformity with the other Astrago charts (this chart renders no
images). Usage: include "gpu-operator-addons.image" (dict "image" .Values.x.image "root" $)
Returns REGISTRY/REPOSITORY:TAG, REGISTRY = offline.registry if set, else the image's registry.
*/}}
{{- define "gpu-operator-addons.image" -}}
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
Device-plugin config (as a dict) for one profile.
*/}}
{{- define "gpu-operator-addons.devicePluginConfig" -}}
{{- $p := . -}}
{{- $flags := dict "migStrategy" ($p.migStrategy | default "none") -}}
{{- with $p.extraFlags }}
{{- $flags = merge $flags . -}}
{{- end }}
{{- $cfg := dict "version" "v1" "flags" $flags -}}
{{- $strategy := $p.strategy | default "none" -}}
{{- if ne $strategy "none" -}}
{{- $resources := list -}}
{{- if $p.resources -}}
{{- $resources = $p.resources -}}
{{- else if $p.replicas -}}
{{- $resources = list (dict "name" "nvidia.com/gpu" "replicas" (int $p.replicas)) -}}
{{- else -}}
{{- fail (printf "devicePlugin.profiles[%s]: strategy %s needs replicas or resources" $p.name $strategy) -}}
{{- end -}}
{{- $sharing := dict "renameByDefault" ($p.renameByDefault | default false) "resources" $resources -}}
{{- if eq $strategy "timeSlicing" -}}
{{- $_ := set $sharing "failRequestsGreaterThanOne" ($p.failRequestsGreaterThanOne | default false) -}}
{{- $_ := set $cfg "sharing" (dict "timeSlicing" $sharing) -}}
{{- else if eq $strategy "mps" -}}
{{- if and $p.migStrategy (ne $p.migStrategy "none") -}}
{{- fail (printf "devicePlugin.profiles[%s]: MPS sharing does not support MIG; use migStrategy none" $p.name) -}}
{{- end -}}
{{- $_ := set $cfg "sharing" (dict "mps" $sharing) -}}
{{- else -}}
{{- fail (printf "devicePlugin.profiles[%s]: unknown strategy %q (none|timeSlicing|mps)" $p.name $strategy) -}}
{{- end -}}
{{- end -}}
{{- printf "version: v1\n%s" (omit $cfg "version" | toYaml) -}}
{{- end }}
