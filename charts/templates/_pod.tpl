{{/*
The pod template of every Eureka component. Call with a dict:
  root, component, cfg (the component's values), gpu (bool), args (list), ports (list of {name, containerPort}),
  env (rendered YAML list), probePort, metricsPort, extraVolumes, extraVolumeMounts (lists, optional).
*/}}
{{- define "eureka.podTemplate" -}}
metadata:
  labels:
    {{- include "eureka.selectorLabels" . | nindent 4 }}
    {{- include "eureka.pipelineLabel" .root | nindent 4 }}
  {{- with include "eureka.podAnnotations" . }}
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
  containers:
    - name: {{ .component }}
      image: {{ include "eureka.image" . | quote }}
      imagePullPolicy: {{ include "eureka.pullPolicy" . }}
      {{- with .command }}
      command:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      args:
        {{- toYaml .args | nindent 8 }}
      ports:
        {{- range .ports }}
        - name: {{ .name }}
          containerPort: {{ .containerPort }}
          protocol: TCP
        {{- end }}
        - name: metrics
          containerPort: {{ .metricsPort }}
          protocol: TCP
      env:
        {{- include "eureka.commonEnv" . | nindent 8 }}
        {{- with .env }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
        {{- include "eureka.extraEnv" .cfg.env | nindent 8 }}
      {{- include "eureka.grpcProbes" (dict "root" .root "component" .component "port" .probePort "startupFailures" .startupFailures) | nindent 6 }}
      resources:
        {{- include "eureka.resources" (dict "resources" .cfg.resources "gpu" (default (dict "enabled" false) .cfg.gpu)) | nindent 8 }}
      securityContext:
        {{- toYaml .root.Values.containerSecurityContext | nindent 8 }}
      volumeMounts:
        {{- include "eureka.volumeMounts" .root | nindent 8 }}
        {{- with .extraVolumeMounts }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
  volumes:
    {{- include "eureka.volumes" .root | nindent 4 }}
    {{- with .extraVolumes }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- include "eureka.scheduling" .cfg | nindent 2 }}
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
