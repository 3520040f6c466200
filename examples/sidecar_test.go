package examples_test

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	sigsjson "sigs.k8s.io/json"
	sigsyaml "sigs.k8s.io/yaml"
)

// sidecarSecret is the Secret the sidecar's README tells the reader to create, with its keys.
const sidecarSecret = "webhook-gateway-secrets"

var sidecarSecretKeys = []string{"admin-token", "ingest-token", "partner-token", "encryption-key"}

// gatewayContainer is the gateway's container in the sidecar Deployment.
const gatewayContainer = "gateway"

// sidecarObjects are the sidecar manifests, decoded into their API types.
type sidecarObjects struct {
	claims      []*corev1.PersistentVolumeClaim
	configMaps  []*corev1.ConfigMap
	deployments []*appsv1.Deployment
	policies    []*networkingv1.NetworkPolicy
}

// TestSidecarManifestsDecodeStrictly decodes every document of the sidecar's manifests into its
// k8s.io/api type as the API server's strict field validation would: an unknown field (a typo,
// a wrong case, a field at the wrong level) or a repeated one fails the test.
func TestSidecarManifestsDecodeStrictly(t *testing.T) {
	objs := decodeSidecar(t, sidecarManifest)
	if len(objs.claims) != 1 || len(objs.configMaps) != 1 || len(objs.deployments) != 1 || len(objs.policies) != 1 {
		t.Fatalf("%s: want one PersistentVolumeClaim, ConfigMap, Deployment and NetworkPolicy; got %d, %d, %d, %d",
			sidecarManifest, len(objs.claims), len(objs.configMaps), len(objs.deployments), len(objs.policies))
	}

	// The strict decoding is what this test rests on: check that it refuses what it should.
	for name, doc := range map[string]string{
		"unknown field":   "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\ndata: {}\nbinarydata: {}\n",
		"wrong case":      "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\nData: {}\n",
		"repeated field":  "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\ndata: {}\ndata: {}\n",
		"nested typo":     "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\nspec:\n  template:\n    spec:\n      securityContext: {runAsNonroot: true}\n",
		"unknown kind":    "apiVersion: v1\nkind: Sekret\nmetadata: {name: x}\n",
		"wrong api group": "apiVersion: v1\nkind: Deployment\nmetadata: {name: x}\n",
	} {
		if err := decodeDocument([]byte(doc), &sidecarObjects{}); err == nil {
			t.Errorf("the strict decoder accepted a document with a %s:\n%s", name, doc)
		}
	}
}

// TestSidecarPodSecurity checks the sidecar Deployment's pod against the "restricted" Pod
// Security Standard and the rest of what the example promises: resources and probes for every
// container, GOMEMLIMIT under the gateway's memory limit, no service account token, secrets only
// from the Secret.
func TestSidecarPodSecurity(t *testing.T) {
	objs := decodeSidecar(t, sidecarManifest)
	if len(objs.deployments) != 1 {
		t.Fatalf("%s: want one Deployment, found %d", sidecarManifest, len(objs.deployments))
	}
	pod := &objs.deployments[0].Spec.Template.Spec
	for _, problem := range podProblems(pod) {
		t.Error(problem)
	}
	if gw := findContainer(pod, gatewayContainer); gw == nil {
		t.Errorf("no container named %s", gatewayContainer)
	} else if _, ok := env(gw, "GOMEMLIMIT"); !ok {
		t.Errorf("container %s: no GOMEMLIMIT (under its memory limit, so the Go runtime collects before the kernel kills)", gatewayContainer)
	}

	// The checks catch what they should: each change below must be reported.
	for name, spoil := range map[string]func(*corev1.PodSpec){
		"privilege escalation allowed": func(p *corev1.PodSpec) {
			p.Containers[0].SecurityContext.AllowPrivilegeEscalation = ptr(true)
		},
		"capability added": func(p *corev1.PodSpec) {
			p.InitContainers[0].SecurityContext.Capabilities.Add = []corev1.Capability{"NET_ADMIN"}
		},
		"running as root allowed": func(p *corev1.PodSpec) {
			p.SecurityContext.RunAsNonRoot = nil
			p.Containers[0].SecurityContext.RunAsNonRoot = nil
		},
		"seccomp unconfined": func(p *corev1.PodSpec) {
			p.InitContainers[0].SecurityContext.SeccompProfile = &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeUnconfined}
		},
		"writable root filesystem": func(p *corev1.PodSpec) {
			p.Containers[0].SecurityContext.ReadOnlyRootFilesystem = nil
		},
		"no memory limit": func(p *corev1.PodSpec) { delete(p.Containers[0].Resources.Limits, corev1.ResourceMemory) },
		"no probe":        func(p *corev1.PodSpec) { p.Containers[0].LivenessProbe = nil },
		"token mounted":   func(p *corev1.PodSpec) { p.AutomountServiceAccountToken = nil },
		"hostPath volume": func(p *corev1.PodSpec) {
			p.Volumes = append(p.Volumes, corev1.Volume{Name: "h", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/"}}})
		},
		"GOMEMLIMIT at the limit": func(p *corev1.PodSpec) {
			gw := findContainer(p, gatewayContainer)
			for i := range gw.Env {
				if gw.Env[i].Name == "GOMEMLIMIT" {
					gw.Env[i].Value = gw.Resources.Limits.Memory().String() + "B"
				}
			}
		},
		"secret in the manifest": func(p *corev1.PodSpec) {
			p.Containers[0].Env = append(p.Containers[0].Env, corev1.EnvVar{Name: "API_TOKEN", Value: "s3cret"})
		},
	} {
		spoilt := pod.DeepCopy()
		spoil(spoilt)
		if len(podProblems(spoilt)) == 0 {
			t.Errorf("the checks did not notice: %s", name)
		}
	}
}

// TestSidecarNetworkPolicy checks that the NetworkPolicy selects the Deployment's pods, limits
// both directions, and lets no other pod reach the gateway's port.
func TestSidecarNetworkPolicy(t *testing.T) {
	objs := decodeSidecar(t, sidecarManifest)
	if len(objs.deployments) != 1 || len(objs.policies) != 1 {
		t.Fatalf("%s: want one Deployment and one NetworkPolicy", sidecarManifest)
	}
	tmpl := objs.deployments[0].Spec.Template
	np := objs.policies[0]

	sel, err := metav1.LabelSelectorAsSelector(&np.Spec.PodSelector)
	if err != nil {
		t.Fatal(err)
	}
	if sel.Empty() || !sel.Matches(labels.Set(tmpl.Labels)) {
		t.Errorf("NetworkPolicy %s: podSelector %q does not select the Deployment's pods (labels %v)", np.Name, sel, tmpl.Labels)
	}
	for _, want := range []networkingv1.PolicyType{networkingv1.PolicyTypeIngress, networkingv1.PolicyTypeEgress} {
		if !slices.Contains(np.Spec.PolicyTypes, want) {
			t.Errorf("NetworkPolicy %s: policyTypes %v lack %s", np.Name, np.Spec.PolicyTypes, want)
		}
	}

	gw := findContainer(&tmpl.Spec, gatewayContainer)
	if gw == nil || len(gw.Ports) == 0 {
		t.Fatalf("no container %s with a port", gatewayContainer)
	}
	for i, rule := range np.Spec.Ingress {
		if len(rule.Ports) == 0 {
			t.Errorf("NetworkPolicy %s: ingress[%d] names no port, so it opens every port, the gateway's too", np.Name, i)
		}
		for _, p := range rule.Ports {
			for _, gp := range gw.Ports {
				if p.Port == nil || p.Port.IntValue() == int(gp.ContainerPort) || (gp.Name != "" && p.Port.String() == gp.Name) {
					t.Errorf("NetworkPolicy %s: ingress[%d] lets other pods reach the gateway's port %d", np.Name, i, gp.ContainerPort)
				}
			}
		}
	}
	if len(np.Spec.Egress) == 0 {
		t.Errorf("NetworkPolicy %s: no egress rule, so the gateway cannot deliver", np.Name)
	}
}

// podProblems lists how pod falls short of the restricted Pod Security Standard and of what the
// sidecar example promises. See https://kubernetes.io/docs/concepts/security/pod-security-standards/.
func podProblems(pod *corev1.PodSpec) []string {
	var ps []string
	add := func(format string, args ...any) { ps = append(ps, fmt.Sprintf(format, args...)) }

	if pod.HostNetwork || pod.HostPID || pod.HostIPC {
		add("pod: host namespaces are shared")
	}
	if pod.AutomountServiceAccountToken == nil || *pod.AutomountServiceAccountToken {
		add("pod: automountServiceAccountToken must be false")
	}
	psc := pod.SecurityContext
	if psc == nil {
		psc = &corev1.PodSecurityContext{}
	}
	if psc.FSGroupChangePolicy == nil || *psc.FSGroupChangePolicy != corev1.FSGroupChangeOnRootMismatch {
		add("pod: securityContext.fsGroupChangePolicy must be OnRootMismatch")
	}
	if psc.RunAsUser != nil && *psc.RunAsUser == 0 {
		add("pod: runAsUser 0")
	}
	if len(psc.Sysctls) > 0 {
		add("pod: sysctls set")
	}
	if psc.SeccompProfile != nil && !allowedSeccomp(psc.SeccompProfile) {
		add("pod: seccompProfile %s", psc.SeccompProfile.Type)
	}

	secretVolumes := 0
	for _, v := range pod.Volumes {
		vs := v.VolumeSource
		switch {
		case vs.ConfigMap != nil, vs.CSI != nil, vs.DownwardAPI != nil, vs.EmptyDir != nil,
			vs.Ephemeral != nil, vs.PersistentVolumeClaim != nil, vs.Projected != nil:
		case vs.Secret != nil:
			secretVolumes++
			if vs.Secret.SecretName != sidecarSecret {
				add("volume %s: Secret %q, want %s", v.Name, vs.Secret.SecretName, sidecarSecret)
			}
			for _, item := range vs.Secret.Items {
				if !slices.Contains(sidecarSecretKeys, item.Key) {
					add("volume %s: key %q is not one of %v", v.Name, item.Key, sidecarSecretKeys)
				}
			}
		default:
			add("volume %s: a type the restricted profile does not allow", v.Name)
		}
	}
	if secretVolumes == 0 {
		add("pod: no Secret volume; secrets should reach the pod as files")
	}

	sidecars := 0
	for _, c := range allContainers(pod) {
		sidecar := c.RestartPolicy != nil && *c.RestartPolicy == corev1.ContainerRestartPolicyAlways
		if sidecar {
			sidecars++
		}
		where := "container " + c.Name
		sc := c.SecurityContext
		if sc == nil {
			add("%s: no securityContext", where)
			continue
		}
		if sc.Privileged != nil && *sc.Privileged {
			add("%s: privileged", where)
		}
		if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
			add("%s: allowPrivilegeEscalation must be false", where)
		}
		if sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") {
			add("%s: capabilities must drop ALL", where)
		} else {
			for _, c := range sc.Capabilities.Add {
				if c != "NET_BIND_SERVICE" {
					add("%s: adds capability %s", where, c)
				}
			}
		}
		if nonRoot := orPod(sc.RunAsNonRoot, psc.RunAsNonRoot); nonRoot == nil || !*nonRoot {
			add("%s: runAsNonRoot must be true (in the container or the pod)", where)
		}
		if sc.RunAsUser != nil && *sc.RunAsUser == 0 {
			add("%s: runAsUser 0", where)
		}
		if sp := orPod(sc.SeccompProfile, psc.SeccompProfile); sp == nil || !allowedSeccomp(sp) {
			add("%s: seccompProfile must be RuntimeDefault or Localhost (in the container or the pod)", where)
		}
		if sc.ProcMount != nil && *sc.ProcMount != corev1.DefaultProcMount {
			add("%s: procMount %s", where, *sc.ProcMount)
		}
		if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
			add("%s: readOnlyRootFilesystem must be true", where)
		}
		for _, p := range c.Ports {
			if p.HostPort != 0 {
				add("%s: hostPort %d", where, p.HostPort)
			}
		}

		req, lim := c.Resources.Requests, c.Resources.Limits
		if req.Cpu().IsZero() || req.Memory().IsZero() {
			add("%s: resources.requests must set cpu and memory", where)
		}
		if lim.Memory().IsZero() {
			add("%s: resources.limits must set memory", where)
		}
		if v, ok := env(&c, "GOMEMLIMIT"); ok {
			n, err := parseGoMemLimit(v)
			switch {
			case err != nil:
				add("%s: GOMEMLIMIT %q: %v", where, v, err)
			case lim.Memory().IsZero() || n >= lim.Memory().Value():
				add("%s: GOMEMLIMIT %s is not under the memory limit %s", where, v, lim.Memory())
			}
		}

		if c.LivenessProbe == nil {
			add("%s: no livenessProbe", where)
		}
		if sidecar && c.StartupProbe == nil {
			add("%s: a sidecar without a startupProbe lets the producer start before it answers", where)
		}
		if !sidecar && c.ReadinessProbe == nil {
			add("%s: no readinessProbe", where)
		}

		for _, e := range c.Env {
			switch {
			case e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil:
				ref := e.ValueFrom.SecretKeyRef
				if ref.Name != sidecarSecret || !slices.Contains(sidecarSecretKeys, ref.Key) {
					add("%s: env %s from Secret %s key %s, want %s with a key of %v", where, e.Name, ref.Name, ref.Key, sidecarSecret, sidecarSecretKeys)
				}
			case secretName.MatchString(e.Name) && e.Value != "":
				add("%s: env %s holds a secret in the manifest; take it from the Secret", where, e.Name)
			}
		}
	}
	if sidecars != 1 {
		add("pod: want one native sidecar (an init container with restartPolicy: Always), found %d", sidecars)
	}
	return ps
}

// secretName matches environment variable names that hold a secret (not a file name of one).
var secretName = regexp.MustCompile(`(TOKEN|SECRET|PASSWORD|KEY)$`)

// allContainers returns the pod's init containers (the gateway is one) and containers.
func allContainers(pod *corev1.PodSpec) []corev1.Container {
	return append(slices.Clone(pod.InitContainers), pod.Containers...)
}

// findContainer returns the container (or init container) named name, or nil.
func findContainer(pod *corev1.PodSpec, name string) *corev1.Container {
	for i := range pod.InitContainers {
		if pod.InitContainers[i].Name == name {
			return &pod.InitContainers[i]
		}
	}
	for i := range pod.Containers {
		if pod.Containers[i].Name == name {
			return &pod.Containers[i]
		}
	}
	return nil
}

// env returns the literal value of c's environment variable name.
func env(c *corev1.Container, name string) (string, bool) {
	for _, e := range c.Env {
		if e.Name == name {
			return e.Value, e.ValueFrom == nil
		}
	}
	return "", false
}

func allowedSeccomp(sp *corev1.SeccompProfile) bool {
	return sp.Type == corev1.SeccompProfileTypeRuntimeDefault || sp.Type == corev1.SeccompProfileTypeLocalhost
}

// orPod returns the container's setting, or the pod's when the container has none.
func orPod[T any](container, pod *T) *T {
	if container != nil {
		return container
	}
	return pod
}

func ptr[T any](v T) *T { return &v }

// goMemLimit is the form the Go runtime reads GOMEMLIMIT in: a number of bytes with an optional
// unit (B, KiB, MiB, GiB, TiB).
var goMemLimit = regexp.MustCompile(`^([0-9]+)(B|KiB|MiB|GiB|TiB)?$`)

func parseGoMemLimit(s string) (int64, error) {
	m := goMemLimit.FindStringSubmatch(s)
	if m == nil {
		return 0, errors.New("not a number of bytes with an optional unit B, KiB, MiB, GiB or TiB")
	}
	n, err := strconv.ParseInt(m[1], 10, 64)
	if err != nil {
		return 0, err
	}
	shift := map[string]uint{"": 0, "B": 0, "KiB": 10, "MiB": 20, "GiB": 30, "TiB": 40}[m[2]]
	return n << shift, nil
}

// decodeSidecar decodes every document of file strictly into its API type.
func decodeSidecar(t *testing.T, file string) *sidecarObjects {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	objs := &sidecarObjects{}
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	for i := 0; ; i++ {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("%s: document %d: %v", file, i, err)
		}
		if err := decodeDocument(doc, objs); err != nil {
			t.Errorf("%s: document %d: %v", file, i, err)
		}
	}
	return objs
}

// decodeDocument decodes one YAML document into the API type its apiVersion and kind name and
// appends it to objs. A document of comments only is skipped.
func decodeDocument(doc []byte, objs *sidecarObjects) error {
	j, err := sigsyaml.YAMLToJSONStrict(doc)
	if err != nil {
		return err
	}
	if string(bytes.TrimSpace(j)) == "null" {
		return nil
	}
	var tm metav1.TypeMeta
	if err := sigsyaml.Unmarshal(doc, &tm); err != nil {
		return err
	}
	var obj any
	switch tm.APIVersion + " " + tm.Kind {
	case "v1 PersistentVolumeClaim":
		o := &corev1.PersistentVolumeClaim{}
		objs.claims, obj = append(objs.claims, o), o
	case "v1 ConfigMap":
		o := &corev1.ConfigMap{}
		objs.configMaps, obj = append(objs.configMaps, o), o
	case "apps/v1 Deployment":
		o := &appsv1.Deployment{}
		objs.deployments, obj = append(objs.deployments, o), o
	case "networking.k8s.io/v1 NetworkPolicy":
		o := &networkingv1.NetworkPolicy{}
		objs.policies, obj = append(objs.policies, o), o
	default:
		return fmt.Errorf("apiVersion %q kind %q: not a type this test knows; add it to decodeDocument", tm.APIVersion, tm.Kind)
	}
	strict, err := sigsjson.UnmarshalStrict(j, obj)
	if err != nil {
		return fmt.Errorf("%s: %w", tm.Kind, err)
	}
	if len(strict) > 0 {
		msgs := make([]string, len(strict))
		for i, e := range strict {
			msgs[i] = e.Error()
		}
		return fmt.Errorf("%s: %s", tm.Kind, strings.Join(msgs, "; "))
	}
	return nil
}
