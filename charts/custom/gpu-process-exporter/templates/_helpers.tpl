{{/*
Chart name, truncated to 63 chars.
*/}}
{{- define "gpu-process-exporter.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Fully qualified app name.
*/}}
{{- define "gpu-process-exporter.fullname" -}}
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
{{- define "gpu-process-exporter.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Common labels.
*/}}
{{- define "gpu-process-exporter.labels" -}}
helm.sh/chart: {{ include "gpu-process-exporter.chart" . }}
{{ include "gpu-process-exporter.selectorLabels" . }}
{{- if .Chart.AppVersion }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: monitoring
app.kubernetes.io/part-of: astrago
{{- end }}

{{/*
Selector labels.
*/}}
{{- define "gpu-process-exporter.selectorLabels" -}}
app.kubernetes.io/name: {{ include "gpu-process-exporter.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
Image reference. Usage: include "gpu-process-exporter.image" (dict "image" .Values.image "root" $)
Returns REGISTRY/REPOSITORY:TAG where REGISTRY is offline.registry when non-empty, else the image's
own registry; with no registry at all, REPOSITORY:TAG. Only the registry host is ever replaced.
*/}}
{{- define "gpu-process-exporter.image" -}}
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
{{- define "gpu-process-exporter.imagePullSecrets" -}}
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
