// Command ambit-localcluster brings up a real multi-node Kubernetes cluster
// on this machine (no Docker, no registry) for Ambit's e2e tests and demo.
//
//	ambit-localcluster up [--nodes 2] [--image app.tar]...
//	ambit-localcluster status | down | kubeconfig
//	ambit-localcluster load-image [--bin ./bin/app --ref localhost/app:dev] [app.tar]...
//	ambit-localcluster image-build --bin ./bin/app [--bin ./bin/app-cli] --ref localhost/app:dev --out app.tar
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"ambit.dev/e2e/internal/cluster"
	"ambit.dev/e2e/internal/image"
)

const usage = `usage: ambit-localcluster <command> [flags]

commands:
  up           bring up (or re-use) the cluster and import images
  down         remove everything up created (works from recorded state)
  status       show the cluster's processes and readiness (exit 1 if unhealthy)
  kubeconfig   print the admin kubeconfig path
  load-image   import docker-archive tarballs (or --bin/--ref built ones) into every node
  image-build  pack a static binary into a docker-archive tarball
`

func main() {
	if len(os.Args) < 2 {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	if err := run(ctx, log, os.Args[1], os.Args[2:]); err != nil {
		fmt.Fprintf(os.Stderr, "ambit-localcluster %s: %v\n", os.Args[1], err)
		os.Exit(1)
	}
}

type stringList []string

func (s *stringList) String() string     { return fmt.Sprint(*s) }
func (s *stringList) Set(v string) error { *s = append(*s, v); return nil }

func run(ctx context.Context, log *slog.Logger, cmd string, args []string) error {
	cfg, bin, err := parseConfig(cmd, args)
	if err != nil {
		return err
	}
	switch cmd {
	case "image-build":
		if len(bin.paths) == 0 || bin.ref == "" || bin.out == "" {
			return errors.New("image-build needs --bin, --ref and --out")
		}
		return buildImage(bin, bin.out)
	case "kubeconfig":
		fmt.Println(cfg.KubeconfigPath())
		return nil
	}
	c, err := cluster.New(cfg, log)
	if err != nil {
		return err
	}
	switch cmd {
	case "up":
		pause := filepath.Join(cfg.StateDir, "images", "ambit-pause.tar")
		if err := os.MkdirAll(filepath.Dir(pause), 0o755); err != nil {
			return err
		}
		if err := image.Build(image.Spec{
			Ref:        cluster.PauseImage,
			Files:      []image.File{{Src: cfg.PauseBinary, Dst: "/pause", Mode: 0o755}},
			Entrypoint: []string{"/pause"},
		}, pause); err != nil {
			return fmt.Errorf("pause image: %w", err)
		}
		c, err = cluster.New(withImages(cfg, pause), log)
		if err != nil {
			return err
		}
		if err := c.Up(ctx); err != nil {
			return err
		}
		fmt.Printf("cluster %q is up: export KUBECONFIG=%s\n", cfg.Name, cfg.KubeconfigPath())
		return nil
	case "down":
		return c.Down(ctx)
	case "status":
		out, err := c.Status(ctx)
		fmt.Print(out)
		return err
	case "load-image":
		tars := cfg.Images
		if len(bin.paths) > 0 {
			out := filepath.Join(os.TempDir(), fmt.Sprintf("ambit-image-%d.tar", os.Getpid()))
			defer os.Remove(out)
			if err := buildImage(bin, out); err != nil {
				return err
			}
			tars = append(tars, out)
		}
		if len(tars) == 0 {
			return errors.New("load-image needs tarball arguments or --bin and --ref")
		}
		return c.LoadImages(ctx, tars...)
	default:
		return fmt.Errorf("unknown command %q\n%s", cmd, usage)
	}
}

func withImages(cfg cluster.Config, first ...string) cluster.Config {
	cfg.Images = append(first, cfg.Images...)
	return cfg
}

type binFlags struct {
	paths     stringList
	hostPaths stringList
	ref, out  string
}

// parseConfig is the only place that reads flags and the environment.
func parseConfig(cmd string, args []string) (cluster.Config, binFlags, error) {
	fs := flag.NewFlagSet(cmd, flag.ContinueOnError)
	var cfg cluster.Config
	var bin binFlags
	var images stringList
	exe, _ := os.Executable()
	cache := os.Getenv("AMBIT_CACHE")
	if cache == "" {
		base := os.Getenv("XDG_CACHE_HOME")
		if base == "" {
			home, _ := os.UserHomeDir()
			base = filepath.Join(home, ".cache")
		}
		cache = filepath.Join(base, "ambit")
	}
	fs.StringVar(&cfg.Name, "name", "ambit", "cluster name (prefixes links, cgroups)")
	fs.IntVar(&cfg.Nodes, "nodes", 2, "number of nodes (up)")
	stateRoot := fs.String("state-root", "/var/lib/ambit-localcluster", "directory holding one state dir per cluster")
	fs.StringVar(&cfg.K8sBinDir, "k8s-bin-dir", filepath.Join(cache, "k8s", cluster.K8sVersion, "bin"), "directory with the Kubernetes binaries (built by e2e/hack/build-k8s.sh)")
	fs.StringVar(&cfg.CNIPluginDir, "cni-plugin-dir", "/usr/lib/cni", "reference CNI plugins (Debian containernetworking-plugins)")
	fs.StringVar(&cfg.PauseBinary, "pause-binary", filepath.Join(filepath.Dir(exe), "ambit-pause"), "static pause binary for the sandbox image")
	fs.Var(&images, "image", "docker-archive tarball to import into every node (repeatable)")
	fs.Var(&bin.paths, "bin", "static binary to pack as an image (load-image, image-build); repeatable, the first is the entrypoint")
	fs.StringVar(&bin.ref, "ref", "", "image reference, e.g. localhost/ambit-testapp:dev")
	fs.StringVar(&bin.out, "out", "", "output tarball (image-build)")
	fs.Var(&bin.hostPaths, "host-file", "host file or directory to copy into the image at the same path, with its symlinks and shared libraries (image-build; repeatable), e.g. /usr/sbin/iptables")
	if err := fs.Parse(args); err != nil {
		return cfg, bin, err
	}
	cfg.StateDir = filepath.Join(*stateRoot, cfg.Name)
	cfg.Images = append(images, fs.Args()...)
	return cfg, bin, nil
}

// buildImage packs static binaries at /usr/local/bin/<name> (the first is
// the entrypoint) and the host files asked for.
func buildImage(bin binFlags, out string) error {
	var files []image.File
	for _, b := range bin.paths {
		files = append(files, image.File{Src: b, Dst: "/usr/local/bin/" + filepath.Base(b), Mode: 0o755})
	}
	host, err := image.HostFiles(bin.hostPaths)
	if err != nil {
		return err
	}
	files = append(files, host...)
	return image.Build(image.Spec{
		Ref:        bin.ref,
		Files:      files,
		Entrypoint: []string{files[0].Dst},
	}, out)
}
