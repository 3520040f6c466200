package examples_test

import (
	"os"
	"path/filepath"
	"regexp"
	"testing"

	"github.com/webhookgw/gateway/plugins/hmac"
)

// secretPattern matches an hmac secret written out in full (not "whsec_…" or "whsec_$(…)").
var secretPattern = regexp.MustCompile(`whsec_[A-Za-z0-9+/]+=*`)

// TestDocumentedSecretsAreValid checks that every hmac secret the README and the examples show
// is one the hmac plugin accepts, so that a reader who copies one gets a working example.
func TestDocumentedSecretsAreValid(t *testing.T) {
	files := []string{"../README.md"}
	for _, pattern := range []string{"*/*.md", "*/*.yaml", "*/*.go"} {
		more, err := filepath.Glob(pattern)
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, more...)
	}
	found := 0
	for _, file := range files {
		data, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		for _, secret := range secretPattern.FindAllString(string(data), -1) {
			found++
			if _, err := hmac.New(hmac.Config{Secret: hmac.Secret(secret)}); err != nil {
				t.Errorf("%s: the hmac plugin refuses %s: %v", file, secret, err)
			}
		}
	}
	if found == 0 {
		t.Error("no whsec_ secret found in the README or the examples; the README's plugins example shows one")
	}
}
