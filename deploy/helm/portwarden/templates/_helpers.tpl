{{- define "portwarden.fullname" -}}
{{- if contains "portwarden" .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-portwarden" .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "portwarden.labels" -}}
app.kubernetes.io/name: portwarden
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "portwarden.socket" -}}
{{- if .Values.containerSocket -}}
{{- .Values.containerSocket -}}
{{- else if eq .Values.runtime "docker" -}}
/var/run/docker.sock
{{- else if eq .Values.runtime "containerd" -}}
/run/containerd/containerd.sock
{{- else if eq .Values.runtime "crio" -}}
/var/run/crio/crio.sock
{{- else -}}
{{- fail (printf "runtime must be docker, containerd or crio, not %q" .Values.runtime) -}}
{{- end -}}
{{- end -}}

{{- define "portwarden.rulesVolume" -}}
{{- if .Values.rules.files -}}
configMap:
  name: {{ include "portwarden.fullname" . }}-rules
{{- else if .Values.rules.configMap -}}
configMap:
  name: {{ .Values.rules.configMap }}
{{- else if .Values.rules.hostPath -}}
hostPath:
  path: {{ .Values.rules.hostPath }}
  type: Directory
{{- end -}}
{{- end -}}
