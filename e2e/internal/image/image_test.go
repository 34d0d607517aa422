package image

import (
	"archive/tar"
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

const testRef = "localhost/ambit-testapp:dev"

// writeTemp writes content to a new file in t's temp dir with mode perm.
func writeTemp(t *testing.T, fileName, content string, perm os.FileMode) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), fileName)
	if err := os.WriteFile(p, []byte(content), perm); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, perm); err != nil { // umask-proof
		t.Fatal(err)
	}
	return p
}

func testSpec(t *testing.T) Spec {
	bin := writeTemp(t, "app", "#!fake binary\x00\x01\x02", 0o600)
	data := writeTemp(t, "data.txt", "hello\n", 0o640)
	return Spec{
		Ref: testRef,
		Files: []File{
			{Src: bin, Dst: "/usr/local/bin/ambit-testapp", Mode: 0o755},
			{Src: data, Dst: "/etc/ambit/data.txt"}, // mode from the host file
		},
		Entrypoint: []string{"/usr/local/bin/ambit-testapp"},
		Cmd:        []string{"serve"},
		Env:        []string{"FOO=bar"},
		WorkingDir: "/tmp",
	}
}

type layerEntry struct {
	typ     byte
	mode    os.FileMode
	content string
}

func readLayer(t *testing.T, img v1.Image) map[string]layerEntry {
	t.Helper()
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	if len(layers) != 1 {
		t.Fatalf("got %d layers, want 1", len(layers))
	}
	rc, err := layers[0].Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	got := map[string]layerEntry{}
	tr := tar.NewReader(rc)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		if !hdr.ModTime.Equal(Epoch) {
			t.Errorf("%s: mtime %v, want %v", hdr.Name, hdr.ModTime, Epoch)
		}
		if hdr.Uid != 0 || hdr.Gid != 0 {
			t.Errorf("%s: owner %d:%d, want 0:0", hdr.Name, hdr.Uid, hdr.Gid)
		}
		got[hdr.Name] = layerEntry{typ: hdr.Typeflag, mode: hdr.FileInfo().Mode(), content: string(b)}
	}
	return got
}

func TestBuild(t *testing.T) {
	spec := testSpec(t)
	out := filepath.Join(t.TempDir(), "img.tar")
	if err := Build(spec, out); err != nil {
		t.Fatal(err)
	}

	m, err := tarball.LoadManifest(func() (io.ReadCloser, error) { return os.Open(out) })
	if err != nil {
		t.Fatal(err)
	}
	if len(m) != 1 || !slices.Equal(m[0].RepoTags, []string{testRef}) {
		t.Fatalf("archive manifest = %+v, want one image tagged %s", m, testRef)
	}

	tag, err := name.NewTag(testRef)
	if err != nil {
		t.Fatal(err)
	}
	img, err := tarball.ImageFromPath(out, &tag)
	if err != nil {
		t.Fatal(err)
	}

	cfg, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	t.Run("config", func(t *testing.T) {
		if !slices.Equal(cfg.Config.Entrypoint, spec.Entrypoint) {
			t.Errorf("entrypoint = %q, want %q", cfg.Config.Entrypoint, spec.Entrypoint)
		}
		if !slices.Equal(cfg.Config.Cmd, spec.Cmd) {
			t.Errorf("cmd = %q, want %q", cfg.Config.Cmd, spec.Cmd)
		}
		if want := []string{DefaultPath, "FOO=bar"}; !slices.Equal(cfg.Config.Env, want) {
			t.Errorf("env = %q, want %q", cfg.Config.Env, want)
		}
		if cfg.Config.WorkingDir != "/tmp" {
			t.Errorf("working dir = %q, want /tmp", cfg.Config.WorkingDir)
		}
		if cfg.OS != "linux" || cfg.Architecture != runtime.GOARCH {
			t.Errorf("platform = %s/%s, want linux/%s", cfg.OS, cfg.Architecture, runtime.GOARCH)
		}
		if !cfg.Created.Equal(Epoch) {
			t.Errorf("created = %v, want %v", cfg.Created, Epoch)
		}
		if len(cfg.RootFS.DiffIDs) != 1 {
			t.Errorf("rootfs diff ids = %v, want 1", cfg.RootFS.DiffIDs)
		}
	})

	t.Run("layer", func(t *testing.T) {
		got := readLayer(t, img)
		want := map[string]layerEntry{
			"etc/":                        {typ: tar.TypeDir, mode: os.ModeDir | 0o755},
			"etc/ambit/":                  {typ: tar.TypeDir, mode: os.ModeDir | 0o755},
			"etc/ambit/data.txt":          {typ: tar.TypeReg, mode: 0o640, content: "hello\n"},
			"tmp/":                        {typ: tar.TypeDir, mode: os.ModeDir | os.ModeSticky | 0o777},
			"usr/":                        {typ: tar.TypeDir, mode: os.ModeDir | 0o755},
			"usr/local/":                  {typ: tar.TypeDir, mode: os.ModeDir | 0o755},
			"usr/local/bin/":              {typ: tar.TypeDir, mode: os.ModeDir | 0o755},
			"usr/local/bin/ambit-testapp": {typ: tar.TypeReg, mode: 0o755, content: "#!fake binary\x00\x01\x02"},
		}
		for n, w := range want {
			g, ok := got[n]
			if !ok {
				t.Errorf("layer lacks %s", n)
				continue
			}
			if g != w {
				t.Errorf("%s = {type %c mode %v content %q}, want {type %c mode %v content %q}", n, g.typ, g.mode, g.content, w.typ, w.mode, w.content)
			}
		}
		for n := range got {
			if _, ok := want[n]; !ok {
				t.Errorf("layer has unexpected entry %s", n)
			}
		}
	})
}

func TestBuildIsReproducible(t *testing.T) {
	spec := testSpec(t)
	dir := t.TempDir()
	var ids, digests []v1.Hash
	var archives [][]byte
	for i, out := range []string{filepath.Join(dir, "a.tar"), filepath.Join(dir, "b.tar")} {
		if err := Build(spec, out); err != nil {
			t.Fatalf("build %d: %v", i, err)
		}
		img, err := tarball.ImageFromPath(out, nil)
		if err != nil {
			t.Fatal(err)
		}
		id, err := img.ConfigName()
		if err != nil {
			t.Fatal(err)
		}
		d, err := img.Digest()
		if err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(out)
		if err != nil {
			t.Fatal(err)
		}
		ids, digests, archives = append(ids, id), append(digests, d), append(archives, b)
	}
	if ids[0] != ids[1] {
		t.Errorf("image IDs differ: %s vs %s", ids[0], ids[1])
	}
	if digests[0] != digests[1] {
		t.Errorf("manifest digests differ: %s vs %s", digests[0], digests[1])
	}
	if string(archives[0]) != string(archives[1]) {
		t.Error("archive bytes differ between two builds of the same spec")
	}

	// A changed binary must change the image.
	changed := spec
	changed.Files = slices.Clone(spec.Files)
	changed.Files[0].Src = writeTemp(t, "app", "another binary", 0o755)
	img, _, err := Image(changed)
	if err != nil {
		t.Fatal(err)
	}
	id, err := img.ConfigName()
	if err != nil {
		t.Fatal(err)
	}
	if id == ids[0] {
		t.Errorf("image ID %s did not change when the binary did", id)
	}
}

func TestBuildRejects(t *testing.T) {
	bin := writeTemp(t, "app", "x", 0o755)
	cases := []struct {
		name    string
		spec    Spec
		wantErr string
	}{
		{
			name:    "invalid ref",
			spec:    Spec{Ref: "Not A Ref", Files: []File{{Src: bin, Dst: "/app"}}},
			wantErr: "is not an image tag",
		},
		{
			name:    "relative destination",
			spec:    Spec{Ref: testRef, Files: []File{{Src: bin, Dst: "usr/bin/app"}}},
			wantErr: "clean absolute file path",
		},
		{
			name:    "unclean destination",
			spec:    Spec{Ref: testRef, Files: []File{{Src: bin, Dst: "/usr/../app"}}},
			wantErr: "clean absolute file path",
		},
		{
			name:    "duplicate destination",
			spec:    Spec{Ref: testRef, Files: []File{{Src: bin, Dst: "/app"}, {Src: bin, Dst: "/app"}}},
			wantErr: "given twice",
		},
		{
			name:    "file clashes with directory",
			spec:    Spec{Ref: testRef, Files: []File{{Src: bin, Dst: "/bin"}, {Src: bin, Dst: "/bin/app"}}},
			wantErr: "also a parent directory",
		},
		{
			name:    "missing source",
			spec:    Spec{Ref: testRef, Files: []File{{Src: filepath.Join(t.TempDir(), "nope"), Dst: "/app"}}},
			wantErr: "was the binary built?",
		},
		{
			name:    "source is a directory",
			spec:    Spec{Ref: testRef, Files: []File{{Src: t.TempDir(), Dst: "/app"}}},
			wantErr: "not a regular file",
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := Build(tc.spec, filepath.Join(t.TempDir(), "out.tar"))
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("Build() error = %v, want one containing %q", err, tc.wantErr)
			}
		})
	}
}

func TestLddPath(t *testing.T) {
	cases := []struct {
		name, line, want string
		err              bool
	}{
		{"vdso", "\tlinux-vdso.so.1 (0x00007eff1b2f3000)", "", false},
		{"library", "\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007eff1b010000)", "/lib/x86_64-linux-gnu/libc.so.6", false},
		{"interpreter", "\t/lib64/ld-linux-x86-64.so.2 (0x00007eff1b2f5000)", "/lib64/ld-linux-x86-64.so.2", false},
		{"missing", "\tlibfoo.so.1 => not found", "", true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := lddPath(tc.line)
			if (err != nil) != tc.err || got != tc.want {
				t.Fatalf("lddPath(%q) = %q, %v; want %q (error %v)", tc.line, got, err, tc.want, tc.err)
			}
		})
	}
}

func TestHostFilesKeepsSymlinks(t *testing.T) {
	dir := t.TempDir()
	real := filepath.Join(dir, "tool-multi")
	if err := os.WriteFile(real, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("tool-multi", filepath.Join(dir, "tool")); err != nil {
		t.Fatal(err)
	}
	files, err := HostFiles([]string{filepath.Join(dir, "tool")})
	if err != nil {
		t.Fatal(err)
	}
	want := []File{{Dst: filepath.Join(dir, "tool"), Link: "tool-multi"}, {Src: real, Dst: real}}
	if !reflect.DeepEqual(files, want) {
		t.Fatalf("HostFiles = %+v, want %+v", files, want)
	}
	layer, err := LayerTar(files)
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(bytes.NewReader(layer))
	links := 0
	for {
		hdr, err := tr.Next()
		if err != nil {
			break
		}
		if hdr.Typeflag == tar.TypeSymlink {
			links++
			if hdr.Linkname != "tool-multi" {
				t.Fatalf("symlink %s -> %s, want tool-multi", hdr.Name, hdr.Linkname)
			}
		}
	}
	if links != 1 {
		t.Fatalf("layer has %d symlinks, want 1", links)
	}
}
