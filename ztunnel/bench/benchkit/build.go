package benchkit

import (
	"context"
	"fmt"
	"os/exec"
)

// BuildTags are the tags every shipped Ambit binary is built with (the
// Makefile's GOTAGS). grpcnotrace leaves golang.org/x/net/trace out of
// grpc: that package pulls in text/template, whose reflective method
// calls make the linker keep every exported method of every reachable
// type, which is 6-7 MB of binary and ~3 MB of resident pages per process.
const BuildTags = "grpcnotrace"

// GoBuild builds pkg into out as the Makefile does (with BuildTags), from
// the current directory's module or workspace.
func GoBuild(ctx context.Context, out, pkg string) error {
	cmd := exec.CommandContext(ctx, "go", "build", "-tags", BuildTags, "-o", out, pkg)
	if msg, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build -tags %s %s: %w\n%s", BuildTags, pkg, err, msg)
	}
	return nil
}
