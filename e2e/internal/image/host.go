package image

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
)

// HostFiles returns the image files that make the host paths work inside an
// image at the same paths: each path (a file, or a directory whose regular
// files and symlinks are taken, not recursively), every symlink on the way
// kept as a symlink with its target added too, and the shared libraries
// (and ELF interpreter) of every dynamically linked file, as ldd reports
// them. It lets an image carry a distribution tool such as iptables.
func HostFiles(paths []string) ([]File, error) {
	h := &hostFiles{seen: map[string]bool{}}
	for _, p := range paths {
		if !filepath.IsAbs(p) {
			return nil, fmt.Errorf("host path %q must be absolute", p)
		}
		fi, err := os.Stat(p)
		if err != nil {
			return nil, fmt.Errorf("host path for the image: %w", err)
		}
		if !fi.IsDir() {
			if err := h.add(p); err != nil {
				return nil, err
			}
			continue
		}
		ents, err := os.ReadDir(p)
		if err != nil {
			return nil, fmt.Errorf("host directory for the image: %w", err)
		}
		for _, e := range ents {
			if e.Type().IsRegular() || e.Type()&os.ModeSymlink != 0 {
				if err := h.add(filepath.Join(p, e.Name())); err != nil {
					return nil, err
				}
			}
		}
	}
	slices.SortFunc(h.files, func(a, b File) int { return strings.Compare(a.Dst, b.Dst) })
	return h.files, nil
}

type hostFiles struct {
	seen  map[string]bool
	files []File
}

// add takes path (a symlink chain is followed, each link kept) and the
// libraries it needs.
func (h *hostFiles) add(p string) error {
	for depth := 0; ; depth++ {
		p = filepath.Clean(p)
		if h.seen[p] {
			return nil
		}
		if depth > 16 {
			return fmt.Errorf("host path %s: too many levels of symlinks", p)
		}
		h.seen[p] = true
		fi, err := os.Lstat(p)
		if err != nil {
			return fmt.Errorf("host path for the image: %w", err)
		}
		if fi.Mode()&os.ModeSymlink == 0 {
			if !fi.Mode().IsRegular() {
				return fmt.Errorf("host path %s is not a regular file", p)
			}
			h.files = append(h.files, File{Src: p, Dst: p})
			return h.addLibs(p)
		}
		target, err := os.Readlink(p)
		if err != nil {
			return fmt.Errorf("host path for the image: %w", err)
		}
		h.files = append(h.files, File{Dst: p, Link: target})
		if !filepath.IsAbs(target) {
			target = filepath.Join(filepath.Dir(p), target)
		}
		p = target
	}
}

// addLibs adds what ldd lists for an ELF file; other files need nothing.
func (h *hostFiles) addLibs(p string) error {
	head := make([]byte, 4)
	f, err := os.Open(p)
	if err != nil {
		return err
	}
	_, err = f.Read(head)
	f.Close()
	if err != nil || !bytes.Equal(head, []byte("\x7fELF")) {
		return nil
	}
	out, err := exec.Command("ldd", p).CombinedOutput()
	if err != nil {
		if bytes.Contains(out, []byte("not a dynamic executable")) {
			return nil
		}
		return fmt.Errorf("ldd %s: %v: %s (is libc-bin installed?)", p, err, bytes.TrimSpace(out))
	}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		lib, err := lddPath(sc.Text())
		if err != nil {
			return fmt.Errorf("ldd %s: %w", p, err)
		}
		if lib != "" {
			if err := h.add(lib); err != nil {
				return err
			}
		}
	}
	return nil
}

// lddPath returns the library path of one ldd output line, "" for lines
// naming none (the vDSO).
func lddPath(line string) (string, error) {
	line = strings.TrimSpace(line)
	if strings.Contains(line, "not found") {
		return "", fmt.Errorf("library missing on this host: %s", line)
	}
	if _, after, ok := strings.Cut(line, "=> "); ok {
		line = after
	}
	fields := strings.Fields(line)
	if len(fields) == 0 || !strings.HasPrefix(fields[0], "/") {
		return "", nil
	}
	return fields[0], nil
}
