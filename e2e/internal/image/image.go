// Package image builds single-layer container images from static binaries and
// writes them as docker-archive tarballs, the format that
// `ctr -n k8s.io images import` and `docker load` accept.
//
// The images are reproducible: every timestamp is fixed and the layer is
// assembled in a sorted order, so the same input files give the same image ID
// (config digest) and manifest digest on every build.
package image

import (
	"archive/tar"
	"bytes"
	"fmt"
	"io"
	"os"
	"path"
	"runtime"
	"sort"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// Epoch is the timestamp given to every file in the layer and to the image
// config, so that builds are reproducible.
var Epoch = time.Unix(0, 0).UTC()

// DefaultPath is the PATH put in the image environment when Spec.Env sets none,
// so that exec'ing a binary by its bare name works in the container.
const DefaultPath = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// File is one host file copied into the image.
type File struct {
	// Src is the path of the file on the host.
	Src string
	// Dst is the absolute path of the file in the image, e.g. /usr/local/bin/app.
	Dst string
	// Mode is the permission bits in the image (0755 for binaries). Zero means
	// the permission bits of Src.
	Mode os.FileMode
	// Link, when set, makes Dst a symbolic link to Link (Src and Mode are
	// unused).
	Link string
}

// Spec describes an image to build.
type Spec struct {
	// Ref is the tag written into the archive as given, e.g.
	// localhost/ambit-testapp:dev; containerd keeps a localhost/ name as is.
	Ref string
	// Files are copied into the single layer, with their parent directories.
	Files []File
	// Entrypoint is the image config entrypoint.
	Entrypoint []string
	// Cmd is the image config cmd (arguments to Entrypoint), may be empty.
	Cmd []string
	// Env is KEY=VALUE entries; DefaultPath is added when none starts with PATH=.
	Env []string
	// WorkingDir is the image config working directory; empty means /.
	WorkingDir string
}

// Build builds the image that spec describes and writes it as a docker-archive
// tarball to outPath, replacing any file there.
func Build(spec Spec, outPath string) error {
	img, tag, err := Image(spec)
	if err != nil {
		return err
	}
	if err := tarball.WriteToFile(outPath, tag, img); err != nil {
		return fmt.Errorf("writing image %s to %s: %w (is the directory writable?)", tag, outPath, err)
	}
	return nil
}

// Image builds the image that spec describes in memory and returns it with the
// parsed tag. The layer contents are read from the host files now.
func Image(spec Spec) (v1.Image, name.Tag, error) {
	tag, err := name.NewTag(spec.Ref)
	if err != nil {
		return nil, name.Tag{}, fmt.Errorf("image ref %q is not an image tag such as localhost/app:dev: %w", spec.Ref, err)
	}
	layerTar, err := LayerTar(spec.Files)
	if err != nil {
		return nil, name.Tag{}, err
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(layerTar)), nil
	})
	if err != nil {
		return nil, name.Tag{}, fmt.Errorf("making layer for %s: %w", spec.Ref, err)
	}

	cfg := &v1.ConfigFile{
		Architecture: runtime.GOARCH,
		OS:           "linux",
		Created:      v1.Time{Time: Epoch},
		Config: v1.Config{
			Entrypoint: spec.Entrypoint,
			Cmd:        spec.Cmd,
			Env:        withDefaultPath(spec.Env),
			WorkingDir: spec.WorkingDir,
		},
		RootFS: v1.RootFS{Type: "layers"},
	}
	img, err := mutate.ConfigFile(empty.Image, cfg)
	if err != nil {
		return nil, name.Tag{}, fmt.Errorf("setting config of %s: %w", spec.Ref, err)
	}
	img, err = mutate.Append(img, mutate.Addendum{
		Layer: layer,
		History: v1.History{
			Created:   v1.Time{Time: Epoch},
			CreatedBy: "ambit.dev/e2e/internal/image.Build",
			Comment:   "static binaries",
		},
	})
	if err != nil {
		return nil, name.Tag{}, fmt.Errorf("appending layer to %s: %w", spec.Ref, err)
	}
	return img, tag, nil
}

func withDefaultPath(env []string) []string {
	for _, e := range env {
		if strings.HasPrefix(e, "PATH=") {
			return env
		}
	}
	return append([]string{DefaultPath}, env...)
}

// entry is one tar entry of the layer before it is written.
type entry struct {
	dir  bool
	mode int64
	src  string
	link string
}

// LayerTar returns the uncompressed tar of a layer holding files, their parent
// directories (mode 0755) and /tmp (mode 1777). Entries are sorted by path and
// carry Epoch as time and root as owner, so equal inputs give equal bytes.
func LayerTar(files []File) ([]byte, error) {
	entries := map[string]entry{
		"tmp": {dir: true, mode: 0o1777},
	}
	for _, f := range files {
		dst, err := layerPath(f.Dst)
		if err != nil {
			return nil, err
		}
		if _, dup := entries[dst]; dup {
			return nil, fmt.Errorf("image path %s is given twice (or clashes with /tmp)", f.Dst)
		}
		if err := addParents(entries, dst, f.Dst); err != nil {
			return nil, err
		}
		if f.Link != "" {
			entries[dst] = entry{mode: 0o777, link: f.Link}
			continue
		}
		fi, err := os.Stat(f.Src)
		if err != nil {
			return nil, fmt.Errorf("reading %s for image path %s: %w (was the binary built?)", f.Src, f.Dst, err)
		}
		if !fi.Mode().IsRegular() {
			return nil, fmt.Errorf("%s for image path %s is not a regular file", f.Src, f.Dst)
		}
		mode := f.Mode.Perm()
		if f.Mode == 0 {
			mode = fi.Mode().Perm()
		}
		entries[dst] = entry{mode: int64(mode), src: f.Src}
	}
	for n, e := range entries {
		if e.dir {
			continue
		}
		for d := path.Dir(n); d != "."; d = path.Dir(d) {
			if !entries[d].dir {
				return nil, fmt.Errorf("image path /%s is a file and also a parent directory of /%s", d, n)
			}
		}
	}

	names := make([]string, 0, len(entries))
	for n := range entries {
		names = append(names, n)
	}
	sort.Strings(names)

	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, n := range names {
		e := entries[n]
		hdr := &tar.Header{
			Name:    n,
			Mode:    e.mode,
			ModTime: Epoch,
			Uname:   "root",
			Gname:   "root",
		}
		if e.link != "" {
			hdr.Typeflag = tar.TypeSymlink
			hdr.Linkname = e.link
			if err := tw.WriteHeader(hdr); err != nil {
				return nil, fmt.Errorf("writing layer entry /%s: %w", n, err)
			}
			continue
		}
		if e.dir {
			hdr.Typeflag = tar.TypeDir
			hdr.Name += "/"
			if err := tw.WriteHeader(hdr); err != nil {
				return nil, fmt.Errorf("writing layer entry /%s: %w", n, err)
			}
			continue
		}
		if err := writeFile(tw, hdr, e.src); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, fmt.Errorf("closing layer tar: %w", err)
	}
	return buf.Bytes(), nil
}

// addParents records the parent directories of the layer entry dst.
func addParents(entries map[string]entry, dst, orig string) error {
	for d := path.Dir(dst); d != "."; d = path.Dir(d) {
		e, ok := entries[d]
		if ok && !e.dir {
			return fmt.Errorf("image path /%s is a file and also a parent directory of %s", d, orig)
		}
		if !ok {
			entries[d] = entry{dir: true, mode: 0o755}
		}
	}
	return nil
}

func writeFile(tw *tar.Writer, hdr *tar.Header, src string) error {
	f, err := os.Open(src)
	if err != nil {
		return fmt.Errorf("opening %s: %w", src, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return fmt.Errorf("stat %s: %w", src, err)
	}
	hdr.Typeflag = tar.TypeReg
	hdr.Size = fi.Size()
	if err := tw.WriteHeader(hdr); err != nil {
		return fmt.Errorf("writing layer entry /%s: %w", hdr.Name, err)
	}
	n, err := io.Copy(tw, f)
	if err != nil {
		return fmt.Errorf("copying %s into layer: %w (did the file change while building?)", src, err)
	}
	if n != hdr.Size {
		return fmt.Errorf("copying %s into layer: read %d bytes, expected %d (did the file change while building?)", src, n, hdr.Size)
	}
	return nil
}

// layerPath turns an absolute image path into a tar entry name (no leading /).
func layerPath(dst string) (string, error) {
	if !path.IsAbs(dst) || path.Clean(dst) != dst || dst == "/" {
		return "", fmt.Errorf("image path %q must be a clean absolute file path such as /usr/local/bin/app", dst)
	}
	return strings.TrimPrefix(dst, "/"), nil
}
