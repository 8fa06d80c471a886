#!/usr/bin/env bash
# gpu-process-exporter: per-process GPU memory metrics for node-exporter's textfile collector.
#
# Every INTERVAL seconds:
#   1. nvidia-smi --query-compute-apps=pid,process_name,used_gpu_memory,gpu_uuid --format=csv,noheader,nounits
#   2. map each PID to pod UID / container ID via /proc/<pid>/cgroup (needs hostPID)
#   3. write Prometheus text format to a temp file in TEXTFILE_DIR and rename it atomically
#      to TEXTFILE_DIR/OUTPUT_FILE (node-exporter only reads *.prom, so the temp file is ignored).
set -uo pipefail

INTERVAL="${INTERVAL:-15}"
TEXTFILE_DIR="${TEXTFILE_DIR:-/textfile}"
OUTPUT_FILE="${OUTPUT_FILE:-gpu_process.prom}"
NVIDIA_SMI_TIMEOUT="${NVIDIA_SMI_TIMEOUT:-10}"
PROC_DIR="${PROC_DIR:-/proc}"
OUT="${TEXTFILE_DIR}/${OUTPUT_FILE}"

log() { echo "$(date -u +%Y-%m-%dT%H:%M:%SZ) $*" >&2; }

# Remove our file on shutdown so Prometheus does not keep serving frozen values.
cleanup() {
  log "terminating, removing ${OUT}"
  rm -f "${OUT}" "${TEXTFILE_DIR}"/.gpu_process.*.tmp 2>/dev/null
  exit 0
}
trap cleanup TERM INT

# Escape a Prometheus label value: backslash, double quote, newline.
escape_label() {
  local v="$1"
  v="${v//\\/\\\\}"
  v="${v//\"/\\\"}"
  v="${v//$'\n'/\\n}"
  printf '%s' "$v"
}

trim() {
  local v="$1"
  v="${v#"${v%%[![:space:]]*}"}"
  v="${v%"${v##*[![:space:]]}"}"
  printf '%s' "$v"
}

# Sets POD_UID and CONTAINER_ID for a PID ("" when not a Kubernetes container).
# Handles cgroup v1/v2 and cgroupfs/systemd drivers, e.g.
#   0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid_with_underscores>.slice/cri-containerd-<64hex>.scope
#   11:memory:/kubepods/besteffort/pod<uid>/<64hex>
resolve_pid() {
  local pid="$1" cg uid cid
  POD_UID=""
  CONTAINER_ID=""
  cg="$(cat "${PROC_DIR}/${pid}/cgroup" 2>/dev/null)" || return 0
  uid="$(grep -oE 'pod[0-9a-fA-F]{8}[-_][0-9a-fA-F]{4}[-_][0-9a-fA-F]{4}[-_][0-9a-fA-F]{4}[-_][0-9a-fA-F]{12}' <<<"${cg}" | head -n1)"
  if [[ -n "${uid}" ]]; then
    uid="${uid#pod}"
    POD_UID="${uid//_/-}"
  fi
  cid="$(grep -oE '[0-9a-f]{64}' <<<"${cg}" | tail -n1)"
  CONTAINER_ID="${cid}"
}

collect() {
  local tmp raw rc now line pid rest uuid mem name bytes
  local -A count=()
  tmp="$(mktemp "${TEXTFILE_DIR}/.gpu_process.XXXXXX.tmp")" || { log "cannot create temp file in ${TEXTFILE_DIR}"; return 1; }

  raw="$(timeout "${NVIDIA_SMI_TIMEOUT}" nvidia-smi \
        --query-compute-apps=pid,process_name,used_gpu_memory,gpu_uuid \
        --format=csv,noheader,nounits 2>&1)"
  rc=$?
  now="$(date +%s)"

  {
    echo "# HELP gpu_process_memory_used_bytes GPU memory used by a compute process."
    echo "# TYPE gpu_process_memory_used_bytes gauge"
    if [[ ${rc} -eq 0 ]]; then
      while IFS= read -r line; do
        [[ -z "$(trim "${line}")" ]] && continue
        # pid,process_name,used_gpu_memory,gpu_uuid - split from both ends so commas in the
        # process name cannot shift the columns.
        pid="$(trim "${line%%,*}")"
        rest="${line#*,}"
        uuid="$(trim "${rest##*,}")"
        rest="${rest%,*}"
        mem="$(trim "${rest##*,}")"
        name="$(trim "${rest%,*}")"
        [[ "${pid}" =~ ^[0-9]+$ ]] || continue
        count["${uuid}"]=$(( ${count["${uuid}"]:-0} + 1 ))
        # used_gpu_memory is MiB; "[N/A]" (e.g. insufficient permissions) is skipped.
        [[ "${mem}" =~ ^[0-9]+$ ]] || continue
        bytes=$(( mem * 1024 * 1024 ))
        resolve_pid "${pid}"
        printf 'gpu_process_memory_used_bytes{gpu_uuid="%s",pid="%s",process_name="%s",pod_uid="%s",container_id="%s"} %s\n' \
          "$(escape_label "${uuid}")" "${pid}" "$(escape_label "${name}")" \
          "${POD_UID}" "${CONTAINER_ID}" "${bytes}"
      done <<<"${raw}"
    fi
    echo "# HELP gpu_process_count Number of compute processes per GPU (GPUs with at least one process)."
    echo "# TYPE gpu_process_count gauge"
    for uuid in "${!count[@]}"; do
      printf 'gpu_process_count{gpu_uuid="%s"} %s\n' "$(escape_label "${uuid}")" "${count[${uuid}]}"
    done
    echo "# HELP gpu_process_exporter_scrape_success Whether the last nvidia-smi call succeeded (1) or failed (0)."
    echo "# TYPE gpu_process_exporter_scrape_success gauge"
    echo "gpu_process_exporter_scrape_success $(( rc == 0 ? 1 : 0 ))"
    echo "# HELP gpu_process_exporter_last_run_timestamp_seconds Unix time of the last collection."
    echo "# TYPE gpu_process_exporter_last_run_timestamp_seconds gauge"
    echo "gpu_process_exporter_last_run_timestamp_seconds ${now}"
  } >"${tmp}"

  if [[ ${rc} -ne 0 ]]; then
    log "nvidia-smi failed (rc=${rc}): ${raw}"
  fi

  chmod 0644 "${tmp}"
  # Same filesystem -> rename(2) is atomic: node-exporter never reads a partial file.
  mv -f "${tmp}" "${OUT}"
}

if ! [[ "${INTERVAL}" =~ ^[0-9]+$ ]] || [[ "${INTERVAL}" -lt 1 ]]; then
  log "invalid INTERVAL=${INTERVAL}"; exit 1
fi
mkdir -p "${TEXTFILE_DIR}" || { log "cannot create ${TEXTFILE_DIR}"; exit 1; }
command -v nvidia-smi >/dev/null 2>&1 || log "WARNING: nvidia-smi not found in PATH (is the NVIDIA runtime/runtimeClassName set?)"
log "writing ${OUT} every ${INTERVAL}s"

while true; do
  collect || log "collection failed"
  # Sleep in the background so SIGTERM is handled immediately.
  sleep "${INTERVAL}" &
  wait $!
done
