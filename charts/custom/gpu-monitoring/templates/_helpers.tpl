{{/*
Chart name, truncated to 63 chars.
*/}}
{{- define "gpu-monitoring.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Fully qualified app name (prefix of the PrometheusRule and the dashboard ConfigMaps).
*/}}
{{- define "gpu-monitoring.fullname" -}}
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
{{- define "gpu-monitoring.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Common labels.
*/}}
{{- define "gpu-monitoring.labels" -}}
helm.sh/chart: {{ include "gpu-monitoring.chart" . }}
{{ include "gpu-monitoring.selectorLabels" . }}
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
{{- define "gpu-monitoring.selectorLabels" -}}
app.kubernetes.io/name: {{ include "gpu-monitoring.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
The GPU cluster dashboard's uid, read from its JSON so alert links cannot drift from it.
*/}}
{{- define "gpu-monitoring.dashboardUid" -}}
{{- $dashboard := .Files.Get "dashboards/gpu-cluster.json" | fromJson -}}
{{- required "dashboards/gpu-cluster.json has no uid" $dashboard.uid -}}
{{- end }}

{{/*
Labels of one alert: its severity and prometheusRule.alertLabels.
Usage: include "gpu-monitoring.alertLabels" (dict "root" $ "alert" $.Values.alerts.GpuXidCritical)
*/}}
{{- define "gpu-monitoring.alertLabels" -}}
severity: {{ .alert.severity | quote }}
{{- range $key, $value := .root.Values.prometheusRule.alertLabels }}
{{ $key }}: {{ $value | quote }}
{{- end }}
{{- end }}

{{/*
The optional link annotations of one alert: runbook_url (runbookBaseUrl#<alertname in lower
case>) and dashboard_url (grafanaUrl; with `node`, the alert label naming the node, the
dashboard opens on that node). Usage:
include "gpu-monitoring.links" (dict "root" $ "name" "GpuXidCritical" "node" "Hostname")
*/}}
{{- define "gpu-monitoring.links" -}}
{{- $values := .root.Values -}}
{{- with $values.runbookBaseUrl }}
runbook_url: {{ printf "%s#%s" (trimSuffix "/" .) (lower $.name) | quote }}
{{- end }}
{{- with $values.grafanaUrl }}
{{- $url := printf "%s/d/%s" (trimSuffix "/" .) (include "gpu-monitoring.dashboardUid" $.root) }}
{{- if $.node }}
{{- $url = printf "%s?var-node={{ $labels.%s }}" $url $.node }}
{{- end }}
dashboard_url: {{ $url | quote }}
{{- end }}
{{- end }}

{{/*
PromQL keeping the DCGM_FI_DEV_XID_ERRORS series whose value (the XID) is one of `codes`:
(DCGM_FI_DEV_XID_ERRORS == 48 or DCGM_FI_DEV_XID_ERRORS == 62). The value, not the err_code
label, so it holds for dcgm-exporter versions without that label.
Usage: include "gpu-monitoring.xidIn" (list 48 62)
*/}}
{{- define "gpu-monitoring.xidIn" -}}
{{- $terms := list -}}
{{- range $code := . -}}
{{- $terms = append $terms (printf "DCGM_FI_DEV_XID_ERRORS == %d" (int $code)) -}}
{{- end -}}
{{- printf "(%s)" (join " or " $terms) -}}
{{- end }}

{{/*
PromQL that is non-empty when the cluster has GPU resources (kube-state-metrics), so that the
"no exporter at all" alerts stay quiet on a cluster without GPUs.
*/}}
{{- define "gpu-monitoring.clusterHasGpus" -}}
{{- printf "(sum(kube_node_status_capacity{resource=~%q}) > 0)" .Values.targets.gpuResource -}}
{{- end }}
