{{/*
ambit.image is a component's image reference from its image values:
<registry>/<repository>:<tag>, or <repository>:<tag> without a registry.
*/}}
{{- define "ambit.image" -}}
{{- if .registry }}{{ .registry }}/{{ end }}{{ .repository }}:{{ .tag }}
{{- end }}

{{/*
ambit.labels are the labels on every object of the chart (pod templates and
selectors keep their own "app" label, which DaemonSet and Deployment
selectors cannot change after creation).
*/}}
{{- define "ambit.labels" -}}
app.kubernetes.io/part-of: ambit
{{- end }}

{{/*
ambit.meshRootNamespace is the namespace of mesh-wide policies: the value
meshRootNamespace, else the release namespace.
*/}}
{{- define "ambit.meshRootNamespace" -}}
{{- .Values.meshRootNamespace | default .Release.Namespace }}
{{- end }}
