{{/* One driver per cluster (the CSIDriver object is cluster-wide), so
object names are fixed, as in the kustomize base. */}}

{{- define "modelfs-csi.labels" -}}
app.kubernetes.io/part-of: modelfs-csi
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "modelfs-csi.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{- define "modelfs-csi.sidecarImage" -}}
{{ .repository }}:{{ .tag }}
{{- end -}}

{{/* The plugin's socket directory and registration path under kubelet's. */}}
{{- define "modelfs-csi.pluginDir" -}}
{{ trimSuffix "/" .Values.kubeletDir }}/plugins/csi.modelfs.io
{{- end -}}
