{{/*
Shared pieces of the operator chart: names, labels, the image, and each component's pod metadata and
placement. Object names are fixed (not derived from the release name) because the programs and the CRD
chart refer to them: one brupop per cluster.
*/}}

{{- define "brupop.namespace" -}}
{{- default .Release.Namespace .Values.namespace -}}
{{- end -}}

{{- define "brupop.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{/* Labels of every object; call with (dict "root" $ "component" "agent"). */}}
{{- define "brupop.labels" -}}
brupop.bottlerocket.aws/component: {{ .component }}
app.kubernetes.io/component: {{ .component }}
app.kubernetes.io/name: {{ .root.Chart.Name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/part-of: brupop
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version }}
{{- end -}}

{{/*
A pod template's metadata: the component label (the selector; the apiserver also finds agent pods by it),
the global then the component's podLabels and podAnnotations, and the scrape annotations when asked for.
Call with (dict "root" $ "component" "apiserver" "values" .Values.apiserver "scrape" (dict "port" 8443
"scheme" "https")); "scrape" may be omitted.
*/}}
{{- define "brupop.podMetadata" -}}
labels:
  {{- $labels := merge (dict "brupop.bottlerocket.aws/component" .component) (deepCopy .values.podLabels) (deepCopy .root.Values.podLabels) }}
  {{- toYaml $labels | nindent 2 }}
{{- $annotations := merge (deepCopy .values.podAnnotations) (deepCopy .root.Values.podAnnotations) }}
{{- if and .scrape .root.Values.prometheus.scrapeAnnotations }}
{{- $_ := set $annotations "prometheus.io/scrape" "true" }}
{{- $_ := set $annotations "prometheus.io/port" (toString .scrape.port) }}
{{- $_ := set $annotations "prometheus.io/scheme" .scrape.scheme }}
{{- end }}
{{- with $annotations }}
annotations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* The node requirement every brupop pod has: linux, amd64 or arm64. */}}
{{- define "brupop.linuxAndArch" -}}
- key: kubernetes.io/os
  operator: In
  values: [linux]
- key: kubernetes.io/arch
  operator: In
  values: [amd64, arm64]
{{- end -}}

{{- define "brupop.nodeTerms" -}}
- matchExpressions:
    {{- include "brupop.linuxAndArch" . | nindent 4 }}
{{- end -}}

{{/*
The agent's nodes: those that also opted in to brupop's updates, or are still in an update cycle (their
opt-in label removed mid-cycle: the agent stays to finish or undo it). Terms are ORed.
*/}}
{{- define "brupop.agentNodeTerms" -}}
- matchExpressions:
    {{- include "brupop.linuxAndArch" . | nindent 4 }}
    - key: bottlerocket.aws/updater-interface-version
      operator: In
      values: ["2.0.0"]
- matchExpressions:
    {{- include "brupop.linuxAndArch" . | nindent 4 }}
    - key: brupop.bottlerocket.aws/in-update-cycle
      operator: Exists
{{- end -}}

{{/*
The pod spec fields every brupop pod has: the placement (the component's affinity with the chart's
required node affinity put in, a user's own required node affinity refused since it would replace the
chart's; then nodeSelector, tolerations, topologySpreadConstraints and priorityClassName, each from the
component's own values) and the image pull secrets. Call with (dict "root" $ "name" "agent" "values"
.Values.agent "terms" (list of nodeSelectorTerms) "why" "...").
*/}}
{{- define "brupop.podSpec" -}}
{{- $affinity := deepCopy (.values.affinity | default dict) }}
{{- $node := get $affinity "nodeAffinity" | default dict }}
{{- if hasKey $node "requiredDuringSchedulingIgnoredDuringExecution" }}
{{- fail (printf "%s.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution: the chart sets it (%s); narrow where the %s runs with %s.nodeSelector instead" .name .why .name .name) }}
{{- end }}
{{- $_ := set $node "requiredDuringSchedulingIgnoredDuringExecution" (dict "nodeSelectorTerms" .terms) }}
{{- $_ := set $affinity "nodeAffinity" $node -}}
affinity:
  {{- toYaml $affinity | nindent 2 }}
{{- with .values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.topologySpreadConstraints }}
topologySpreadConstraints:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- with .root.Values.image.pullSecrets }}
imagePullSecrets:
  {{- range . }}
  - name: {{ . }}
  {{- end }}
{{- end }}
{{- end -}}

{{/* The container's image lines. */}}
{{- define "brupop.containerImage" -}}
image: {{ include "brupop.image" . }}
imagePullPolicy: {{ .Values.image.pullPolicy }}
{{- end -}}

{{/* BRUPOP_NAMESPACE from the pod's own namespace, so every program works in any namespace. */}}
{{- define "brupop.namespaceEnv" -}}
- name: BRUPOP_NAMESPACE
  valueFrom:
    fieldRef:
      fieldPath: metadata.namespace
{{- end -}}

{{/* The logging variables; call with (dict "root" $ "level" .Values.agent.logLevel). */}}
{{- define "brupop.loggingEnv" -}}
# Log format: json, or pretty, full, compact (console lines).
- name: LOGGING_FORMATTER
  value: {{ .root.Values.logging.formatter | quote }}
- name: LOGGING_ANSI_ENABLED
  value: {{ .root.Values.logging.ansiEnabled | toString | quote }}
# Log level: trace, debug, info, warn, error or off.
- name: TRACING_FILTER_DIRECTIVE
  value: {{ default .root.Values.logging.level .level | quote }}
{{- end -}}

{{/* The restricted container security context every brupop container runs with. */}}
{{- define "brupop.restricted" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end -}}
