{{/*
The alert rules, one define per rule group; each prints its enabled rules as a YAML list (or
nothing). Expressions aggregate DCGM series `by (Hostname, gpu, UUID, modelName)`: dcgm-exporter
also labels a GPU with the pod using it, and a new pod must not restart an alert's `for` timer.
Annotations are Prometheus templates, kept out of Helm's reach with {{` `}}.
*/}}

{{- define "gpu-monitoring.rules.hardware" -}}
{{- $alerts := .Values.alerts -}}
{{- $gpu := "Hostname, gpu, UUID, modelName" -}}
{{- $ns := .Values.targets.gpuOperatorNamespace -}}
{{- with $alerts.GpuXidCritical }}
{{- if .enabled }}
- alert: GpuXidCritical
  expr: max by ({{ $gpu }}, err_code, err_msg) ({{ include "gpu-monitoring.xidIn" .codes }})
  for: {{ .for | quote }}
  labels:
    {{- include "gpu-monitoring.alertLabels" (dict "root" $ "alert" .) | nindent 4 }}
  annotations:
    summary: {{`"GPU {{ $labels.gpu }} on {{ $labels.Hostname }} reported critical XID {{ $value }}"`}}
    description: {{`"GPU {{ $labels.gpu }} ({{ $labels.modelName }}, {{ $labels.UUID }}) on node {{ $labels.Hostname }} reported XID {{ $value }}{{ with $labels.err_msg }} ({{ . }}){{ end }}: a hardware or driver failure. DCGM keeps the last XID, so this fires until the GPU is reset and dcgm-exporter restarts."`}}
    runbook: {{ printf "Drain the node (kubectl drain NODE --ignore-daemonsets --delete-emptydir-data), look the XID up in https://docs.nvidia.com/deploy/xid-errors/ , check dmesg | grep -i xid and nvidia-smi -q on the node, reset the GPU (nvidia-smi -r -i GPU) or reboot, then clear the value: kubectl -n %s delete pod -l app=nvidia-dcgm-exporter --field-selector spec.nodeName=NODE. An XID that returns after a reset means RMA." $ns | quote }}
    {{- with include "gpu-monitoring.links" (dict "root" $ "name" "GpuXidCritical" "node" "Hostname") }}{{ . | trim | nindent 4 }}{{ end }}
{{- end }}
{{- end }}
{{- with $alerts.GpuXidError }}
{{- if .enabled }}
{{- /* XIDs with their own alert (when that is on) and ignored ones are left out. */}}
{{- $excluded := .ignoredCodes | default list }}
{{- if $alerts.GpuFallenOffTheBus.enabled }}{{ $excluded = append $excluded 79 }}{{ end }}
{{- if $alerts.GpuXidCritical.enabled }}{{ $excluded = concat $excluded $alerts.GpuXidCritical.codes }}{{ end }}
{{- $window := .recentWindow }}
{{- /* Recent = its series (the XID is in err_code) is new on that GPU within the window, or, for
exporters without err_code, the value changed within it. */}}
{{- $recent := printf "(DCGM_FI_DEV_XID_ERRORS > 0 unless on (UUID, err_code) DCGM_FI_DEV_XID_ERRORS offset %s) or (DCGM_FI_DEV_XID_ERRORS > 0 and changes(DCGM_FI_DEV_XID_ERRORS[%s]) > 0)" $window $window }}
- alert: GpuXidError
  expr: {{ printf "max by (%s, err_code, err_msg) ((%s)%s)" $gpu $recent (ternary (printf " unless %s" (include "gpu-monitoring.xidIn" $excluded)) "" (gt (len $excluded) 0)) | quote }}
  for: {{ .for | quote }}
  labels:
    {{- include "gpu-monitoring.alertLabels" (dict "root" $ "alert" .) | nindent 4 }}
  annotations:
    summary: {{`"GPU {{ $labels.gpu }} on {{ $labels.Hostname }} reported XID {{ $value }}"`}}
    description: {{ printf "GPU {{ $labels.gpu }} ({{ $labels.modelName }}, {{ $labels.UUID }}) on node {{ $labels.Hostname }} reported XID {{ $value }}{{ with $labels.err_msg }} ({{ . }}){{ end }} within the last %s." $window | quote }}
    runbook: {{ printf "Look the XID up in https://docs.nvidia.com/deploy/xid-errors/ : 13, 31, 43 and 45 are usually the application's fault (find the pod on that GPU: kubectl get pods -A -o wide --field-selector spec.nodeName=NODE and tell its owner); for others check dmesg | grep -i xid on the node and drain it if the XID repeats. Silence a noisy application XID with alerts.GpuXidError.ignoredCodes." | quote }}
    {{- with include "gpu-monitoring.links" (dict "root" $ "name" "GpuXidError" "node" "Hostname") }}{{ . | trim | nindent 4 }}{{ end }}
{{- end }}
{{- end }}
{{- with $alerts.GpuFallenOffTheBus }}
{{- if .enabled }}
- alert: GpuFallenOffTheBus
  expr: max by ({{ $gpu }}) (DCGM_FI_DEV_XID_ERRORS == 79)
  for: {{ .for | quote }}
  labels:
    {{- include "gpu-monitoring.alertLabels" (dict "root" $ "alert" .) | nindent 4 }}
  annotations:
    summary: {{`"GPU {{ $labels.gpu }} on {{ $labels.Hostname }} has fallen off the bus (XID 79)"`}}
    description: {{`"GPU {{ $labels.gpu }} ({{ $labels.modelName }}, {{ $labels.UUID }}) on node {{ $labels.Hostname }} reported XID 79: the driver lost the GPU on the PCIe bus and every job on it has failed."`}}
    runbook: "Cordon and drain the node, then reboot it (a GPU reset cannot recover XID 79). If it happens again check the GPU's seating, power and cooling (nvidia-smi -q -d TEMPERATURE,POWER before the loss, BMC logs) and RMA the GPU."
    {{- with include "gpu-monitoring.links" (dict "root" $ "name" "GpuFallenOffTheBus" "node" "Hostname") }}{{ . | trim | nindent 4 }}{{ end }}
{{- end }}
{{- end }}
{{- with $alerts.GpuUnhealthy }}
{{- if .enabled }}
{{- $resource := $.Values.targets.gpuResource }}
- alert: GpuUnhealthy
  expr: {{ printf "max by (node, resource) (kube_node_status_allocatable{resource=~%q}) < on (node, resource) max by (node, resource) (kube_node_status_capacity{resource=~%q})" $resource $resource | quote }}
  for: {{ .for | quote }}
  labels:
    {{- include "gpu-monitoring.alertLabels" (dict "root" $ "alert" .) | nindent 4 }}
  annotations:
    summary: {{`"Node {{ $labels.node }} has unhealthy GPUs ({{ $labels.resource }})"`}}
    description: {{`"Only {{ $value }} {{ $labels.resource }} of node {{ $labels.node }} are allocatable, fewer than its capacity: the NVIDIA device plugin marked GPUs unhealthy (after an XID such as 48, 79 or 94) and no new pod gets them."`}}
    runbook: {{ printf "On the node find the GPU (nvidia-smi; dmesg | grep -i xid), read the device plugin's log (kubectl -n %s logs -l app=nvidia-device-plugin-daemonset --prefix | grep NODE), drain the node and reset the GPU or reboot; the GPU counts again once the device plugin pod restarts." $ns | quote }}
    {{- with include "gpu-monitoring.links" (dict "root" $ "name" "GpuUnhealthy" "node" "node") }}{{ . | trim | nindent 4 }}{{ end }}
{{- end }}
{{- end }}
{{- with $alerts.GpuMissing }}
{{- if .enabled }}
{{- $count := "count by (Hostname) (group by (Hostname, UUID) (DCGM_FI_DEV_GPU_TEMP))" }}
- alert: GpuMissing
  expr: {{ printf "%s < max_over_time((%s)[%s:5m])" $count $count .lookback | quote }}
  for: {{ .for | quote }}
  labels:
    {{- include "gpu-monitoring.alertLabels" (dict "root" $ "alert" .) | nindent 4 }}
  annotations:
    summary: {{`"Node {{ $labels.Hostname }} lost a GPU"`}}
    description: {{ printf "dcgm-exporter on node {{ $labels.Hostname }} reports {{ $value }} GPUs, fewer than it did within the last %s: a GPU has fallen off the bus or the driver no longer sees it." .lookback | quote }}
    runbook: "Compare nvidia-smi -L on the node with lspci | grep -i nvidia and look for XID 79 in dmesg; drain the node and reboot it. A GPU still missing after the reboot needs hardware service; a GPU removed on purpose stops this alert once the lookback has passed."
    {{- with include "gpu-monitoring.links" (dict "root" $ "name" "GpuMissing" "node" "Hostname") }}{{ . | trim | nindent 4 }}{{ end }}
{{- end }}
{{- end }}
{{- with $alerts.GpuEccDoubleBitErrors }}
{{- if .enabled }}
- alert: GpuEccDoubleBitErrors
  expr: max by ({{ $gpu }}) (DCGM_FI_DEV_ECC_DBE_VOL_TOTAL) > {{ .threshold }}
  for: {{ .for | quote }}
  labels:
    {{- include "gpu-monitoring.alertLabels" (dict "root" $ "alert" .) | nindent 4 }}
  annotations:
    summary: {{`"GPU {{ $labels.gpu }} on {{ $labels.Hostname }} had uncorrectable ECC errors"`}}
    description: {{`"GPU {{ $labels.gpu }} ({{ $labels.modelName }}, {{ $labels.UUID }}) on node {{ $labels.Hostname }} counted {{ $value }} double-bit (uncorrectable) ECC errors since the driver was loaded: jobs on it may have computed with corrupted memory."`}}
    runbook: "Tell the owners of the jobs on that GPU their results may be wrong, drain the node and reset the GPU (nvidia-smi -r -i GPU) or reboot so the bad page is retired or the row remapped (the volatile count clears then); if DBEs come back, RMA the GPU."
    {{- with include "gpu-monitoring.links" (dict "root" $ "name" "GpuEccDoubleBitErrors" "node" "Hostname") }}{{ . | trim | nindent 4 }}{{ end }}
{{- end }}
{{- end }}
{{- with $alerts.GpuRetiredPagesPending }}
{{- if .enabled }}
- alert: GpuRetiredPagesPending
  expr: max by ({{ $gpu }}) (DCGM_FI_DEV_RETIRED_PENDING) > 0
  for: {{ .for | quote }}
  labels:
    {{- include "gpu-monitoring.alertLabels" (dict "root" $ "alert" .) | nindent 4 }}
  annotations:
    summary: {{`"GPU {{ $labels.gpu }} on {{ $labels.Hostname }} has pages waiting to be retired"`}}
    description: {{`"GPU {{ $labels.gpu }} ({{ $labels.modelName }}, {{ $labels.UUID }}) on node {{ $labels.Hostname }} has {{ $value }} memory pages pending retirement; they stay in use until the GPU is reset."`}}
    runbook: "Drain the node when convenient and reset the GPU (nvidia-smi -r -i GPU) or reboot so the pending pages are retired; check nvidia-smi -q -d PAGE_RETIREMENT afterwards."
    {{- with include "gpu-monitoring.links" (dict "root" $ "name" "GpuRetiredPagesPending" "node" "Hostname") }}{{ . | trim | nindent 4 }}{{ end }}
{{- end }}
{{- end }}
{{- with $alerts.GpuRetiredPagesHigh }}
{{- if .enabled }}
- alert: GpuRetiredPagesHigh
  expr: max by ({{ $gpu }}) (DCGM_FI_DEV_RETIRED_SBE + DCGM_FI_DEV_RETIRED_DBE) >= {{ .threshold }}
  for: {{ .for | quote }}
  labels:
    {{- include "gpu-monitoring.alertLabels" (dict "root" $ "alert" .) | nindent 4 }}
  annotations:
    summary: {{`"GPU {{ $labels.gpu }} on {{ $labels.Hostname }} has retired {{ $value }} memory pages"`}}
    description: {{`"GPU {{ $labels.gpu }} ({{ $labels.modelName }}, {{ $labels.UUID }}) on node {{ $labels.Hostname }} has retired {{ $value }} memory pages (single- plus double-bit); the retirement table holds 64, after which errors can no longer be mapped out."`}}
    runbook: "Plan an RMA of the GPU with its nvidia-smi -q -d PAGE_RETIREMENT output and serial number (nvidia-smi -q | grep -i serial); move long jobs off it meanwhile."
    {{- with include "gpu-monitoring.links" (dict "root" $ "name" "GpuRetiredPagesHigh" "node" "Hostname") }}{{ . | trim | nindent 4 }}{{ end }}
{{- end }}
{{- end }}
{{- with $alerts.GpuRowRemapFailure }}
{{- if .enabled }}
- alert: GpuRowRemapFailure
  expr: max by ({{ $gpu }}) (DCGM_FI_DEV_ROW_REMAP_FAILURE) > 0
  for: {{ .for | quote }}
  labels:
    {{- include "gpu-monitoring.alertLabels" (dict "root" $ "alert" .) | nindent 4 }}
  annotations:
    summary: {{`"GPU {{ $labels.gpu }} on {{ $labels.Hostname }} failed to remap a memory row"`}}
    description: {{`"GPU {{ $labels.gpu }} ({{ $labels.modelName }}, {{ $labels.UUID }}) on node {{ $labels.Hostname }} could not remap a failing memory row (no spare rows left in a bank): its memory errors can no longer be repaired."`}}
    runbook: "Drain the node, take the GPU out of service and RMA it (NVIDIA's RMA policy covers a row-remap failure); attach nvidia-smi -q -d ROW_REMAPPER and nvidia-bug-report.sh output."
    {{- with include "gpu-monitoring.links" (dict "root" $ "name" "GpuRowRemapFailure" "node" "Hostname") }}{{ . | trim | nindent 4 }}{{ end }}
{{- end }}
{{- end }}
{{- end }}

{{- define "gpu-monitoring.rules.temperature" -}}
{{- $gpu := "Hostname, gpu, UUID, modelName" -}}
{{- range $name, $metric := dict "GpuTemperatureHigh" "DCGM_FI_DEV_GPU_TEMP" "GpuTemperatureCritical" "DCGM_FI_DEV_GPU_TEMP" "GpuMemoryTemperatureHigh" "DCGM_FI_DEV_MEMORY_TEMP" "GpuMemoryTemperatureCritical" "DCGM_FI_DEV_MEMORY_TEMP" }}
{{- $alert := index $.Values.alerts $name }}
{{- if $alert.enabled }}
{{- $part := ternary "memory" "core" (contains "Memory" $name) }}
- alert: {{ $name }}
  expr: max by ({{ $gpu }}) ({{ $metric }}) > {{ $alert.threshold }}
  for: {{ $alert.for | quote }}
  labels:
    {{- include "gpu-monitoring.alertLabels" (dict "root" $ "alert" $alert) | nindent 4 }}
  annotations:
    summary: {{ printf "GPU {{ $labels.gpu }} on {{ $labels.Hostname }}: %s temperature {{ $value }} C" $part | quote }}
    description: {{ printf "The %s temperature of GPU {{ $labels.gpu }} ({{ $labels.modelName }}, {{ $labels.UUID }}) on node {{ $labels.Hostname }} has been above %v C for %s: the GPU slows its clocks down and, at its limit, shuts down." $part $alert.threshold $alert.for | quote }}
    runbook: "Check the node's fans, airflow and inlet temperature (BMC), and whether one job drives the GPU at full power (nvidia-smi -q -d TEMPERATURE,PERFORMANCE shows thermal slowdown); cap the power (nvidia-smi -pl WATTS -i GPU) or drain the node until the cooling is fixed."
    {{- with include "gpu-monitoring.links" (dict "root" $ "name" $name "node" "Hostname") }}{{ . | trim | nindent 4 }}{{ end }}
{{- end }}
{{- end }}
{{- end }}

{{- define "gpu-monitoring.rules.exporters" -}}
{{- $alerts := .Values.alerts -}}
{{- $job := .Values.targets.dcgmJob -}}
{{- $ns := .Values.targets.gpuOperatorNamespace -}}
{{- $processNs := .Values.targets.gpuProcessExporterNamespace -}}
{{- with $alerts.DcgmExporterDown }}
{{- if .enabled }}
- alert: DcgmExporterDown
  expr: {{ printf "up{job=~%q} == 0" $job | quote }}
  for: {{ .for | quote }}
  labels:
    {{- include "gpu-monitoring.alertLabels" (dict "root" $ "alert" .) | nindent 4 }}
  annotations:
    summary: {{`"dcgm-exporter target {{ $labels.instance }} is down"`}}
    description: {{`"Prometheus cannot scrape dcgm-exporter at {{ $labels.instance }} ({{ $labels.pod }}): that node's GPUs are unmonitored and none of their alerts can fire."`}}
    runbook: {{ printf "kubectl -n %s get pods -l app=nvidia-dcgm-exporter -o wide; read the failing pod's log (a crash loop after a driver upgrade or a bad metrics ConfigMap field is typical) and restart it; a pod that is Running but unscrapeable points at a NetworkPolicy or the ServiceMonitor." $ns | quote }}
    {{- with include "gpu-monitoring.links" (dict "root" $ "name" "DcgmExporterDown") }}{{ . | trim | nindent 4 }}{{ end }}
{{- end }}
{{- end }}
{{- with $alerts.DcgmExporterAbsent }}
{{- if .enabled }}
- alert: DcgmExporterAbsent
  expr: {{ printf "absent(up{job=~%q}) and on () %s" $job (include "gpu-monitoring.clusterHasGpus" $) | quote }}
  for: {{ .for | quote }}
  labels:
    {{- include "gpu-monitoring.alertLabels" (dict "root" $ "alert" .) | nindent 4 }}
  annotations:
    summary: "No dcgm-exporter is scraped although the cluster has GPUs"
    description: {{ printf "Prometheus has no scrape target whose job matches %s while nodes offer GPUs: no GPU metric reaches Prometheus and no GPU alert can fire." $job | quote }}
    runbook: {{ printf "Check that gpu-operator runs dcgm-exporter (kubectl -n %s get ds nvidia-dcgm-exporter) with its ServiceMonitor (gpu-operator value dcgmExporter.serviceMonitor.enabled: true) and that the Prometheus selects that ServiceMonitor; adjust targets.dcgmJob if the job is named otherwise." $ns | quote }}
    {{- with include "gpu-monitoring.links" (dict "root" $ "name" "DcgmExporterAbsent") }}{{ . | trim | nindent 4 }}{{ end }}
{{- end }}
{{- end }}
{{- with $alerts.GpuProcessExporterStale }}
{{- if .enabled }}
- alert: GpuProcessExporterStale
  expr: time() - max by (instance) (gpu_process_exporter_last_run_timestamp_seconds) > {{ .staleSeconds }}
  for: {{ .for | quote }}
  labels:
    {{- include "gpu-monitoring.alertLabels" (dict "root" $ "alert" .) | nindent 4 }}
  annotations:
    summary: {{`"gpu-process-exporter on {{ $labels.instance }} stopped writing"`}}
    description: {{`"The per-process GPU metrics node-exporter {{ $labels.instance }} serves are {{ $value | humanizeDuration }} old: gpu-process-exporter on that node is hung or gone without removing its file."`}}
    runbook: {{ printf "kubectl -n %s get pods -l app.kubernetes.io/name=gpu-process-exporter -o wide; read the node's pod log (a hung nvidia-smi is the usual cause) and delete the pod; if no pod runs on the node, remove the stale gpu_process.prom from the node's textfile directory." $processNs | quote }}
    {{- with include "gpu-monitoring.links" (dict "root" $ "name" "GpuProcessExporterStale") }}{{ . | trim | nindent 4 }}{{ end }}
{{- end }}
{{- end }}
{{- with $alerts.GpuProcessExporterFailing }}
{{- if .enabled }}
- alert: GpuProcessExporterFailing
  expr: min by (instance) (gpu_process_exporter_scrape_success) == 0
  for: {{ .for | quote }}
  labels:
    {{- include "gpu-monitoring.alertLabels" (dict "root" $ "alert" .) | nindent 4 }}
  annotations:
    summary: {{`"gpu-process-exporter on {{ $labels.instance }} cannot run nvidia-smi"`}}
    description: {{`"nvidia-smi calls of gpu-process-exporter on the node behind {{ $labels.instance }} have failed for a while: per-process GPU memory of that node is missing."`}}
    runbook: {{ printf "Read the node's gpu-process-exporter pod log (kubectl -n %s logs POD): nvidia-smi missing means the pod lacks the nvidia runtime (runtimeClassName), a timeout or error means the driver is stuck; run nvidia-smi on the node and check dmesg for XIDs." $processNs | quote }}
    {{- with include "gpu-monitoring.links" (dict "root" $ "name" "GpuProcessExporterFailing") }}{{ . | trim | nindent 4 }}{{ end }}
{{- end }}
{{- end }}
{{- with $alerts.GpuProcessExporterAbsent }}
{{- if .enabled }}
- alert: GpuProcessExporterAbsent
  expr: {{ printf "absent(gpu_process_exporter_last_run_timestamp_seconds) and on () %s" (include "gpu-monitoring.clusterHasGpus" $) | quote }}
  for: {{ .for | quote }}
  labels:
    {{- include "gpu-monitoring.alertLabels" (dict "root" $ "alert" .) | nindent 4 }}
  annotations:
    summary: "No per-process GPU metrics although the cluster has GPUs"
    description: "No gpu-process-exporter metric reaches Prometheus: the per-process panels of the GPU dashboard are empty."
    runbook: {{ printf "Check that the gpu-process-exporter DaemonSet runs on the GPU nodes (kubectl -n %s get ds) and that node-exporter reads its directory (--collector.textfile.directory set to monitoring.textfileDirectory, with that host path mounted); curl NODE:9100/metrics | grep gpu_process on a GPU node." $processNs | quote }}
    {{- with include "gpu-monitoring.links" (dict "root" $ "name" "GpuProcessExporterAbsent") }}{{ . | trim | nindent 4 }}{{ end }}
{{- end }}
{{- end }}
{{- end }}
