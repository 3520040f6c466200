package examples_test

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/webhookgw/gateway/config"
	"github.com/webhookgw/gateway/plugins/builtin"
)

// Paths are relative to this package's directory, where go test runs.
const (
	rootConfig       = "../gateway.yaml"
	sidecarConfig    = "sidecar/gateway.yaml"
	sidecarManifest  = "sidecar/deployment.yaml"
	sidecarConfigMap = "webhook-gateway-config"
)

// TestExampleConfigs loads every examples/*/gateway.yaml with a value for each ${VAR} it uses.
func TestExampleConfigs(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("*", "gateway.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		wd, _ := os.Getwd()
		t.Fatalf("no example found: no */gateway.yaml under %s", wd)
	}
	for _, file := range files {
		t.Run(filepath.Dir(file), func(t *testing.T) {
			data, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			parse(t, file, data, placeholders(data))
		})
	}
}

// TestRootConfig loads the repository's gateway.yaml with nothing set in the environment:
// the default configuration must work out of the box.
func TestRootConfig(t *testing.T) {
	data, err := os.ReadFile(rootConfig)
	if err != nil {
		t.Fatal(err)
	}
	parse(t, rootConfig, data, func(string) (string, bool) { return "", false })
}

// TestSidecarConfigMap checks that the ConfigMap in the sidecar's manifests holds
// sidecar/gateway.yaml byte for byte, and that the manifests keep to one replica.
func TestSidecarConfigMap(t *testing.T) {
	want, err := os.ReadFile(sidecarConfig)
	if err != nil {
		t.Fatal(err)
	}
	docs := decodeManifests(t, sidecarManifest)

	var configMaps, deployments []manifest
	for _, m := range docs {
		switch m.Kind {
		case "ConfigMap":
			if m.Metadata.Name == sidecarConfigMap {
				configMaps = append(configMaps, m)
			}
		case "Deployment":
			deployments = append(deployments, m)
		}
	}

	t.Run("configmap", func(t *testing.T) {
		if len(configMaps) != 1 {
			t.Fatalf("%s: want one ConfigMap named %s, found %d", sidecarManifest, sidecarConfigMap, len(configMaps))
		}
		got, ok := configMaps[0].Data["gateway.yaml"]
		if !ok {
			t.Fatalf("%s: ConfigMap %s has no data key gateway.yaml", sidecarManifest, sidecarConfigMap)
		}
		if got != string(want) {
			t.Errorf("%s: ConfigMap %s data[gateway.yaml] differs from %s: %s",
				sidecarManifest, sidecarConfigMap, sidecarConfig, firstDifference(string(want), got))
		}
		parse(t, sidecarManifest+": ConfigMap "+sidecarConfigMap, []byte(got), placeholders([]byte(got)))
	})

	t.Run("deployment", func(t *testing.T) {
		if len(deployments) != 1 {
			t.Fatalf("%s: want one Deployment, found %d", sidecarManifest, len(deployments))
		}
		// SQLite is single-writer: a second replica would be a second writer.
		if r := deployments[0].Spec.Replicas; r == nil || *r != 1 {
			t.Errorf("%s: Deployment %s must set replicas: 1 (SQLite has one writer)", sidecarManifest, deployments[0].Metadata.Name)
		}
	})
}

// parse parses data as a configuration with the built-in plugins and fails t with every problem.
// The files of ${file:/run/secrets/...} are the pod's mounted secrets, which this machine does
// not have: mountedSecret stands in for them.
func parse(t *testing.T, name string, data []byte, lookup func(string) (string, bool)) *config.Config {
	t.Helper()
	cfg, err := config.ParseSource(data, config.Source{Env: lookup, ReadFile: mountedSecret}, builtin.Registry())
	if err != nil {
		t.Fatalf("%s does not validate:\n%v", name, err)
	}
	return cfg
}

// mountedSecret is a placeholder for a file under /run/secrets/: a valid key for an encryption
// key, a placeholder token otherwise. Any other path is an error, as a missing file would be.
func mountedSecret(path string) ([]byte, error) {
	switch {
	case !strings.HasPrefix(path, "/run/secrets/"):
		return nil, fmt.Errorf("open %s: not a mounted secret", path)
	case strings.HasSuffix(path, "encryption-key"):
		return []byte(base64.StdEncoding.EncodeToString(make([]byte, 32)) + "\n"), nil
	}
	return []byte("placeholder-" + filepath.Base(path) + "\n"), nil
}

// varPattern matches ${VAR} and ${VAR:-default}; "$${" is a literal and is removed first.
var varPattern = regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)(:-[^}]*)?\}`)

// placeholders returns a lookup with a placeholder value for every ${VAR} data names without a
// default (comments included, which does no harm), and nothing else: a variable that has a
// default everywhere it is used is left unset, so its default is what is loaded. A variable
// named …ENCRYPTION_KEY gets a valid key (32 zero bytes in base64), as mountedSecret does.
func placeholders(data []byte) func(string) (string, bool) {
	vars := make(map[string]string)
	for _, m := range varPattern.FindAllSubmatch(bytes.ReplaceAll(data, []byte("$${"), nil), -1) {
		name := string(m[1])
		switch {
		case len(m[2]) > 0: // has a default here
		case strings.HasSuffix(name, "ENCRYPTION_KEY"):
			vars[name] = base64.StdEncoding.EncodeToString(make([]byte, 32))
		default:
			vars[name] = "placeholder-" + strings.ToLower(strings.ReplaceAll(name, "_", "-"))
		}
	}
	return func(name string) (string, bool) {
		v, ok := vars[name]
		return v, ok
	}
}

// manifest is the part of a Kubernetes object these tests look at.
type manifest struct {
	Kind     string `yaml:"kind"`
	Metadata struct {
		Name string `yaml:"name"`
	} `yaml:"metadata"`
	Data map[string]string `yaml:"data"`
	Spec struct {
		Replicas *int `yaml:"replicas"`
	} `yaml:"spec"`
}

// decodeManifests decodes every document of a multi-document YAML file, skipping empty ones.
func decodeManifests(t *testing.T, file string) []manifest {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var docs []manifest
	dec := yaml.NewDecoder(bytes.NewReader(data))
	for i := 0; ; i++ {
		var node yaml.Node
		err := dec.Decode(&node)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("%s: document %d: %v", file, i, err)
		}
		if len(node.Content) == 0 || node.Content[0].Kind != yaml.MappingNode {
			continue // an empty document, such as the one before a leading ---
		}
		var m manifest
		if err := node.Decode(&m); err != nil {
			t.Fatalf("%s: document %d: %v", file, i, err)
		}
		docs = append(docs, m)
	}
	if len(docs) == 0 {
		t.Fatalf("%s: no manifests", file)
	}
	kinds := make([]string, len(docs))
	for i, m := range docs {
		kinds[i] = m.Kind
	}
	sort.Strings(kinds)
	t.Logf("%s: %s", file, strings.Join(kinds, ", "))
	return docs
}

// firstDifference describes the first line where got differs from want.
func firstDifference(want, got string) string {
	w, g := strings.SplitAfter(want, "\n"), strings.SplitAfter(got, "\n")
	for i := 0; i < len(w) || i < len(g); i++ {
		var wl, gl string
		if i < len(w) {
			wl = w[i]
		}
		if i < len(g) {
			gl = g[i]
		}
		if wl != gl {
			return fmt.Sprintf("line %d: want %q, got %q", i+1, wl, gl)
		}
	}
	return "no line differs"
}
