//go:build !linux

package main

import (
	"os/exec"
	"testing"
)

func startOnTerminal(t *testing.T, cmd *exec.Cmd) (out *syncBuffer, wait func() error) {
	t.Skip("pseudo-terminals are opened on Linux only")
	return nil, nil
}

func terminalText(out *syncBuffer) string { return out.String() }
