{{/* Names ------------------------------------------------------------- */}}

{{/* The chart name (or nameOverride). */}}
{{- define "premem.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The prefix of every resource name: <release>-<chart>, or the release
name alone when it already contains the chart name. */}}
{{- define "premem.fullname" -}}
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

{{/* <fullname>-<component>, for (dict "ctx" $ "component" "x"). */}}
{{- define "premem.componentName" -}}
{{- printf "%s-%s" (include "premem.fullname" .ctx | trunc 50 | trimSuffix "-") .component }}
{{- end }}

{{- define "premem.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels ------------------------------------------------------------ */}}

{{/* Selector labels, for (dict "ctx" $ "component" "x"). */}}
{{- define "premem.selectorLabels" -}}
app.kubernetes.io/name: {{ include "premem.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* The Kubernetes recommended labels, for (dict "ctx" $ "component" "x"). */}}
{{- define "premem.labels" -}}
helm.sh/chart: {{ include "premem.chart" .ctx }}
{{ include "premem.selectorLabels" . }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/part-of: premem
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
{{- end }}

{{/* Images, accounts, secrets ----------------------------------------- */}}

{{- define "premem.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion | toString) }}
{{- end }}

{{- define "premem.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "premem.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "premem.tokenSecretName" -}}
{{- .Values.token.existingSecret | default (include "premem.componentName" (dict "ctx" . "component" "token")) }}
{{- end }}

{{- define "premem.tokenSecretKey" -}}
{{- if .Values.token.existingSecret }}{{ .Values.token.existingSecretKey }}{{ else }}token{{ end }}
{{- end }}

{{/* The token Secret's key for (dict "ctx" $ "role" "trainer"): the
role's own token with token.roles, else (and for role "cluster") the
cluster token. */}}
{{- define "premem.tokenKey" -}}
{{- if and .ctx.Values.token.roles (ne .role "cluster") }}{{ .role }}{{ else }}{{ include "premem.tokenSecretKey" .ctx }}{{ end }}
{{- end }}

{{/* PREMEM_TOKEN of a premem container of (dict "ctx" $ "role" "trainer"). */}}
{{- define "premem.tokenEnv" -}}
- name: PREMEM_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ include "premem.tokenSecretName" .ctx }}
      key: {{ include "premem.tokenKey" . }}
{{- end }}

{{- define "premem.objectStoreSecretName" -}}
{{- .Values.objectStore.existingSecret | default (include "premem.componentName" (dict "ctx" . "component" "object-store")) }}
{{- end }}

{{- define "premem.minioName" -}}
{{- include "premem.componentName" (dict "ctx" . "component" "minio") }}
{{- end }}

{{/* The coordinator ---------------------------------------------------- */}}

{{- define "premem.coordinatorName" -}}
{{- include "premem.componentName" (dict "ctx" . "component" "coordinator") }}
{{- end }}

{{/* The address every client dials (PREMEM_COORDINATOR). */}}
{{- define "premem.coordinatorAddress" -}}
{{- printf "%s://%s:%v" (ternary "https" "http" .Values.coordinator.tls.enabled) (include "premem.coordinatorName" .) .Values.coordinator.port }}
{{- end }}

{{/* --state: the value, or s3://<bucket>/state/<release>. */}}
{{- define "premem.coordinatorState" -}}
{{- .Values.coordinator.state | default (printf "s3://%s/state/%s" .Values.objectStore.bucket .Release.Name) }}
{{- end }}

{{/* "true" when --state is a local directory, not a URL. */}}
{{- define "premem.stateIsDir" -}}
{{- if not (contains "://" (include "premem.coordinatorState" .)) }}true{{ end }}
{{- end }}

{{/* The spec ----------------------------------------------------------- */}}

{{- define "premem.specFile" -}}
{{- if eq .Values.spec.kind "sweep" }}sweep.toml{{ else }}job.toml{{ end }}
{{- end }}

{{/* The spec text as the pods get it (after tpl when spec.tpl). */}}
{{- define "premem.specContent" -}}
{{- if .Values.spec.tpl }}
{{- tpl .Values.spec.content . }}
{{- else }}
{{- .Values.spec.content }}
{{- end }}
{{- end }}

{{/* The raw value of `key` in TOML table `table` of `content`, quotes
removed; empty when absent. A line-based reading that is enough for the
plain `key = value` lines of job and sweep specs (no full TOML parser: Helm
3 before 3.17 has no fromToml). For (dict "content" s "table" "run" "key" "name"). */}}
{{- define "premem.tomlValue" -}}
{{- $header := printf "(?m)^[ \\t]*\\[%s\\][ \\t]*(#.*)?$" (.table | replace "." "\\.") }}
{{- $start := regexFind $header .content }}
{{- if $start }}
{{- $rest := index (splitn $start 2 .content) "_1" }}
{{- $body := index (regexSplit "(?m)^[ \\t]*\\[" $rest 2) 0 }}
{{- $line := regexFind (printf "(?m)^[ \\t]*%s[ \\t]*=[^\\n]*" .key) $body }}
{{- if $line }}
{{- $value := regexReplaceAll "^[^=]*=[ \\t]*" $line "" }}
{{- $value = regexReplaceAll "[ \\t]*#[^\"']*$" $value "" }}
{{- $value | trim | trimAll "\"" | trimAll "'" }}
{{- end }}
{{- end }}
{{- end }}

{{/* The world size of the spec: cluster.trainers of a job, job.cluster.trainers
of a sweep's base job; 1 (the default) when absent. */}}
{{- define "premem.specWorldSize" -}}
{{- $content := include "premem.specContent" . }}
{{- $table := ternary "job.cluster" "cluster" (eq .Values.spec.kind "sweep") }}
{{- include "premem.tomlValue" (dict "content" $content "table" $table "key" "trainers") | default "1" }}
{{- end }}

{{/* The job of trainer "job" mode: trainer.jobName or run.name of the spec. */}}
{{- define "premem.jobName" -}}
{{- .Values.trainer.jobName | default (include "premem.tomlValue" (dict "content" (include "premem.specContent" .) "table" "run" "key" "name")) }}
{{- end }}

{{/* Where the runs go: run.output of a job, sweep.output of a sweep. */}}
{{- define "premem.specOutput" -}}
{{- include "premem.tomlValue" (dict "content" (include "premem.specContent" .) "table" (ternary "sweep" "run" (eq .Values.spec.kind "sweep")) "key" "output") }}
{{- end }}

{{/* Checks of values that would otherwise make a cluster that hangs. */}}
{{- define "premem.validate" -}}
{{- if not (has .Values.spec.kind (list "job" "sweep")) }}
{{- fail (printf "spec.kind must be \"job\" or \"sweep\", not %q" (toString .Values.spec.kind)) }}
{{- end }}
{{- if not (has .Values.trainer.mode (list "pool" "job")) }}
{{- fail (printf "trainer.mode must be \"pool\" or \"job\", not %q" (toString .Values.trainer.mode)) }}
{{- end }}
{{- $worldText := include "premem.specWorldSize" . }}
{{- if not (regexMatch "^[0-9]+$" $worldText) }}
{{- fail (printf "the spec's %strainers is %q, not a number (with spec.tpl false, write the number itself)" (ternary "job.cluster." "cluster." (eq .Values.spec.kind "sweep")) $worldText) }}
{{- end }}
{{- $world := $worldText | atoi }}
{{- $perPod := int (.Values.trainer.ranksPerPod | default 1) }}
{{- if lt $perPod 1 }}
{{- fail (printf "trainer.ranksPerPod must be at least 1, not %d" $perPod) }}
{{- end }}
{{- if and (gt $perPod 1) (ne (int .Values.trainer.gpus) 0) (ne (int .Values.trainer.gpus) $perPod) }}
{{- fail (printf "trainer.ranksPerPod %d: each rank takes one GPU of its pod, so trainer.gpus must be %d (or 0 for CPU ranks), not %d" $perPod $perPod (int .Values.trainer.gpus)) }}
{{- end }}
{{- if and (gt $perPod 1) (eq .Values.trainer.mode "job") }}
{{- fail "trainer.ranksPerPod > 1 needs trainer.mode \"pool\" (a pod's ranks are pool trainers named <pod>-<local rank>)" }}
{{- end }}
{{- $replicas := mul (int .Values.trainer.replicas) $perPod }}
{{- if eq .Values.trainer.mode "job" }}
{{- if eq .Values.spec.kind "sweep" }}
{{- fail "trainer.mode \"job\" runs one job: a sweep needs trainer.mode \"pool\"" }}
{{- end }}
{{- if not (include "premem.jobName" .) }}
{{- fail "trainer.mode \"job\": set trainer.jobName (the spec has no [run] name)" }}
{{- end }}
{{- if ne $world $replicas }}
{{- fail (printf "trainer.mode \"job\": the spec's cluster.trainers (%d) must equal trainer.replicas (%d)" $world $replicas) }}
{{- end }}
{{- else if gt $world $replicas }}
{{- fail (printf "the spec's runs need %d trainer ranks but the pool has %d (trainer.replicas x trainer.ranksPerPod): they would never start" $world $replicas) }}
{{- end }}
{{- if and .Values.coordinator.tls.enabled (not .Values.coordinator.tls.secretName) }}
{{- fail "coordinator.tls.enabled needs coordinator.tls.secretName" }}
{{- end }}
{{- if and .Values.serviceMonitor.enabled (not .Values.coordinator.metrics.enabled) }}
{{- fail "serviceMonitor.enabled needs coordinator.metrics.enabled" }}
{{- end }}
{{- if and (include "premem.stateIsDir" .) (not (hasPrefix "/" (include "premem.coordinatorState" .))) }}
{{- fail "coordinator.state: give an object-store URL or an absolute directory" }}
{{- end }}
{{- end }}

{{/* Pods ---------------------------------------------------------------- */}}

{{/* Environment of every premem container. */}}
{{- define "premem.env" -}}
- name: POD_NAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
- name: POD_NAMESPACE
  valueFrom:
    fieldRef:
      fieldPath: metadata.namespace
- name: POD_IP
  valueFrom:
    fieldRef:
      fieldPath: status.podIP
- name: PREMEM_COORDINATOR
  value: {{ include "premem.coordinatorAddress" . | quote }}
- name: PREMEM_LOG_FORMAT
  value: {{ .Values.logFormat | quote }}
{{- if .Values.coordinator.tls.enabled }}
- name: PREMEM_TLS_CA
  value: /etc/premem/tls/ca.crt
{{- end }}
- name: TMPDIR
  value: /tmp
- name: HOME
  value: /tmp
{{- if .Values.minio.enabled }}
- name: AWS_ACCESS_KEY_ID
  valueFrom:
    secretKeyRef:
      name: {{ include "premem.minioName" . }}
      key: rootUser
- name: AWS_SECRET_ACCESS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ include "premem.minioName" . }}
      key: rootPassword
- name: AWS_ENDPOINT
  value: {{ printf "http://%s:%v" (include "premem.minioName" .) .Values.minio.port | quote }}
- name: AWS_ALLOW_HTTP
  value: "true"
- name: AWS_REGION
  value: {{ .Values.objectStore.region | quote }}
{{- else if .Values.objectStore.existingSecret }}
{{- with .Values.objectStore.region }}
- name: AWS_REGION
  value: {{ . | quote }}
{{- end }}
{{- with .Values.objectStore.endpoint }}
- name: AWS_ENDPOINT
  value: {{ . | quote }}
{{- end }}
{{- if .Values.objectStore.allowHttp }}
- name: AWS_ALLOW_HTTP
  value: "true"
{{- end }}
{{- end }}
{{- end }}

{{/* envFrom of every premem container: the object-store Secret. */}}
{{- define "premem.envFrom" -}}
{{- if not .Values.minio.enabled }}
- secretRef:
    name: {{ include "premem.objectStoreSecretName" . }}
{{- end }}
{{- end }}

{{/* The pod securityContext (identical for every pod). */}}
{{- define "premem.podSecurityContext" -}}
{{- toYaml .Values.podSecurityContext }}
{{- end }}

{{/* The container securityContext (identical for every container). */}}
{{- define "premem.securityContext" -}}
{{- toYaml .Values.securityContext }}
{{- end }}

{{/* Volumes of the pods that run on the inputs (coordinator, trainers,
evaluators): /tmp, the inputs at workdir, the spec, TLS. For (dict "ctx" $
"tmpSizeLimit" "1Gi"). */}}
{{- define "premem.volumes" -}}
- name: tmp
  emptyDir:
    sizeLimit: {{ .tmpSizeLimit | default .ctx.Values.tmpSizeLimit }}
- name: inputs
{{- if .ctx.Values.inputs.volume }}
{{- toYaml .ctx.Values.inputs.volume | nindent 2 }}
{{- else }}
  emptyDir: {}
{{- end }}
- name: spec
  configMap:
    name: {{ include "premem.componentName" (dict "ctx" .ctx "component" "spec") }}
{{- if .ctx.Values.coordinator.tls.enabled }}
- name: tls
  secret:
    secretName: {{ .ctx.Values.coordinator.tls.secretName }}
{{- end }}
{{- end }}

{{- define "premem.volumeMounts" -}}
- name: tmp
  mountPath: /tmp
- name: inputs
  mountPath: {{ .Values.workdir }}
- name: spec
  mountPath: /etc/premem/spec
  readOnly: true
{{- if .Values.coordinator.tls.enabled }}
- name: tls
  mountPath: /etc/premem/tls
  readOnly: true
{{- end }}
{{- end }}

{{/* The init container that makes the synthetic task in the inputs volume. */}}
{{- define "premem.synthInit" -}}
{{- if .Values.inputs.synth.enabled }}
- name: synth-data
  image: {{ include "premem.image" . }}
  imagePullPolicy: {{ .Values.image.pullPolicy }}
  command: [{{ .Values.image.binary | quote }}]
  args:
    - data
    - synth
    - --out
    - {{ .Values.inputs.synth.out | quote }}
    {{- range .Values.inputs.synth.args }}
    - {{ . | quote }}
    {{- end }}
  workingDir: {{ .Values.workdir }}
  env:
    - name: PREMEM_LOG_FORMAT
      value: {{ .Values.logFormat | quote }}
    - name: TMPDIR
      value: /tmp
    - name: HOME
      value: /tmp
  securityContext:
    {{- include "premem.securityContext" . | nindent 4 }}
  resources:
    requests:
      cpu: 100m
      memory: 256Mi
    limits:
      memory: 1Gi
  volumeMounts:
    - name: tmp
      mountPath: /tmp
    - name: inputs
      mountPath: {{ .Values.workdir }}
{{- end }}
{{- end }}

{{/* nvidia.com/gpu added to requests and limits of a resources map, for
(dict "resources" map "gpus" n). */}}
{{- define "premem.resources" -}}
{{- $res := deepCopy (.resources | default dict) }}
{{- if gt (int .gpus) 0 }}
{{- $limits := get $res "limits" | default dict }}
{{- $_ := set $limits "nvidia.com/gpu" (int .gpus) }}
{{- $_ := set $res "limits" $limits }}
{{- $requests := get $res "requests" | default dict }}
{{- $_ := set $requests "nvidia.com/gpu" (int .gpus) }}
{{- $_ := set $res "requests" $requests }}
{{- end }}
{{- toYaml $res }}
{{- end }}

{{/* A container that creates objectStore.bucket in the bundled MinIO
(`mc mb --ignore-existing`); needs a volume "tmp" in its pod. */}}
{{- define "premem.minioBucketContainer" -}}
- name: create-bucket
  image: {{ printf "%s:%s" .Values.minio.mcImage.repository .Values.minio.mcImage.tag }}
  imagePullPolicy: {{ .Values.minio.mcImage.pullPolicy }}
  command: ["mc"]
  args:
    - mb
    - --ignore-existing
    - {{ printf "minio/%s" .Values.objectStore.bucket | quote }}
  env:
    - name: MINIO_ROOT_USER
      valueFrom:
        secretKeyRef:
          name: {{ include "premem.minioName" . }}
          key: rootUser
    - name: MINIO_ROOT_PASSWORD
      valueFrom:
        secretKeyRef:
          name: {{ include "premem.minioName" . }}
          key: rootPassword
    - name: MC_HOST_minio
      value: {{ printf "http://$(MINIO_ROOT_USER):$(MINIO_ROOT_PASSWORD)@%s:%v" (include "premem.minioName" .) .Values.minio.port | quote }}
    - name: MC_CONFIG_DIR
      value: /tmp/.mc
    - name: HOME
      value: /tmp
  securityContext:
    {{- include "premem.securityContext" . | nindent 4 }}
  resources:
    requests:
      cpu: 50m
      memory: 64Mi
    limits:
      memory: 256Mi
  volumeMounts:
    - name: tmp
      mountPath: /tmp
{{- end }}
