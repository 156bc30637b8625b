{{/*
The pod template of every Eureka component. Call with a dict:
  root, component, cfg (the component's values), gpu (bool), args (list), ports (list of {name, containerPort}),
  env (rendered YAML list), probePort, metricsPort, extraVolumes, extraVolumeMounts (lists, optional),
  model (bool: mount the model volume), terminationGrace, preStop (an exec command list), probes (rendered
  YAML, replacing the gRPC probes), command (list), noMetrics (bool: a pod that serves no metrics).
*/}}
{{- define "eureka.podTemplate" -}}
metadata:
  labels:
    {{- include "eureka.selectorLabels" . | nindent 4 }}
    {{- include "eureka.pipelineLabel" .root | nindent 4 }}
  {{- with include "eureka.podAnnotations" (dict "root" .root "metricsPort" (ternary 0 .metricsPort (.noMetrics | default false))) }}
  annotations:
    {{- . | nindent 4 }}
  {{- end }}
spec:
  serviceAccountName: {{ include "eureka.serviceAccountName" .root }}
  automountServiceAccountToken: false
  {{- with .root.Values.imagePullSecrets }}
  imagePullSecrets:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  securityContext:
    {{- toYaml .root.Values.podSecurityContext | nindent 4 }}
  terminationGracePeriodSeconds: {{ .terminationGrace | default 60 }}
  {{- if and .model (include "eureka.modelMounted" .root) .root.Values.model.download.enabled }}
  initContainers:
    {{- include "eureka.modelDownload" . | nindent 4 }}
  {{- end }}
  containers:
    - name: {{ .component }}
      image: {{ include "eureka.image" . | quote }}
      imagePullPolicy: {{ include "eureka.pullPolicy" . }}
      {{- with .command }}
      command:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with .args }}
      args:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      ports:
        {{- range .ports }}
        - name: {{ .name }}
          containerPort: {{ .containerPort }}
          protocol: TCP
        {{- end }}
        {{- if not .noMetrics }}
        - name: metrics
          containerPort: {{ .metricsPort }}
          protocol: TCP
        {{- end }}
      env:
        {{- include "eureka.commonEnv" . | nindent 8 }}
        {{- with .env }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
        {{- include "eureka.extraEnv" .cfg.env | nindent 8 }}
      {{- with .cfg.envFrom }}
      envFrom:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- if .probes }}
      {{- .probes | nindent 6 }}
      {{- else }}
      {{- include "eureka.grpcProbes" (dict "root" .root "component" .component "port" .probePort "startupFailures" .startupFailures) | nindent 6 }}
      {{- end }}
      {{- with .preStop }}
      lifecycle:
        preStop:
          exec:
            command:
              {{- toYaml . | nindent 14 }}
      {{- end }}
      resources:
        {{- include "eureka.resources" (dict "resources" .cfg.resources "gpu" (default (dict "enabled" false) .cfg.gpu)) | nindent 8 }}
      securityContext:
        {{- toYaml .root.Values.containerSecurityContext | nindent 8 }}
      volumeMounts:
        {{- include "eureka.volumeMounts" .root | nindent 8 }}
        {{- if and .model (include "eureka.modelMounted" .root) }}
        {{- include "eureka.modelMount" .root | nindent 8 }}
        {{- end }}
        {{- with .extraVolumeMounts }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
  volumes:
    {{- include "eureka.volumes" (dict "root" .root "shmSize" .cfg.shmSize) | nindent 4 }}
    {{- if and .model (include "eureka.modelMounted" .root) }}
    {{- include "eureka.modelVolume" .root | nindent 4 }}
    {{- end }}
    {{- with .extraVolumes }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- include "eureka.scheduling" (dict "root" .root "component" .component "cfg" .cfg) | nindent 2 }}
{{- end -}}

{{/* A ClusterIP Service for a component; call with (dict "root" "component" "ports" (list {name, port})). */}}
{{- define "eureka.service" -}}
apiVersion: v1
kind: Service
metadata:
  name: {{ include "eureka.componentName" . }}
  labels:
    {{- include "eureka.labels" . | nindent 4 }}
spec:
  type: ClusterIP
  {{- if .headless }}
  clusterIP: None
  {{- end }}
  selector:
    {{- include "eureka.selectorLabels" . | nindent 4 }}
    {{- with .extraSelector }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  ports:
    {{- range .ports }}
    - name: {{ .name }}
      port: {{ .port }}
      targetPort: {{ .name }}
      protocol: TCP
      {{- if hasPrefix "grpc" .name }}
      appProtocol: grpc
      {{- end }}
    {{- end }}
{{- end -}}

{{/* A PodDisruptionBudget; call with (dict "root" "component" "pdb" (the values)). */}}
{{- define "eureka.pdb" -}}
{{- if .pdb.enabled }}
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {{ include "eureka.componentName" . }}
  labels:
    {{- include "eureka.labels" . | nindent 4 }}
spec:
  {{- if hasKey .pdb "maxUnavailable" }}
  maxUnavailable: {{ .pdb.maxUnavailable }}
  {{- else }}
  minAvailable: {{ .pdb.minAvailable }}
  {{- end }}
  selector:
    matchLabels:
      {{- include "eureka.selectorLabels" . | nindent 6 }}
{{- end }}
{{- end -}}
