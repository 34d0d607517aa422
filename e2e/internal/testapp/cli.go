package testapp

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"time"

	"google.golang.org/grpc/metadata"
)

// Exit codes of Main.
const (
	ExitOK      = 0
	ExitFailure = 1
	ExitUsage   = 2
)

// Env is what the process learned from its surroundings; main fills it in.
type Env struct {
	// Hostname is reported by serve (and is the default --name).
	Hostname string
	// PodIP is reported by serve when set (from the POD_IP variable).
	PodIP string
	// Stdout receives command output and, for serve, the JSON log.
	Stdout io.Writer
	// Stderr receives errors and usage.
	Stderr io.Writer
	// Getenv reads the environment for ${VAR} references in --upstream
	// (e.g. the BACKEND_SERVICE_HOST variable Kubernetes injects, for
	// clusters without DNS). Nil: no variables.
	Getenv func(string) string
}

const usage = `usage: ambit-testapp <command> [flags]

commands:
  serve [--http :8080] [--tcp :9000] [--name NAME] [--shutdown-timeout 5s] [--upstream URL]
        HTTP server answering JSON about each request (/healthz, /status/<code>,
        /bytes/<n>, /delay/<ms>) and a TCP server that writes "peer=<ip:port>"
        and echoes until the client half-closes. With --upstream, a request to
        / first GETs URL and embeds its answer ("upstream"), or answers 502.
  get URL [--count N] [--interval D] [--timeout D] [--expect-status C]
          [--method M] [--header 'K: V']...
        HTTP client: prints each body on a line; with --count prints "N ok, M failed".
  serve-grpc [--grpc :9090] [--name NAME]
        plaintext HTTP/2 gRPC server: the standard health service
        (grpc.health.v1.Health), every answer with x-served-by: NAME.
  grpc-check ADDR [--count N] [--service S] [--authority H] [--timeout D]
             [--metadata 'K: V']...
        calls grpc.health.v1.Health/Check: prints "served-by=NAME status=..."
        (or "code=...") per call; with --count prints "N ok, M failed".
  tcp ADDR [--send STRING] [--timeout D]
        TCP client: prints the peer= line and the echo of STRING.
  sleep
        blocks until SIGTERM or SIGINT.
`

// Main runs the ambit-testapp command line args (without the program name)
// until it is done or ctx ends, and returns the process exit code.
func Main(ctx context.Context, args []string, env Env) int {
	if len(args) == 0 {
		fmt.Fprint(env.Stderr, usage)
		return ExitUsage
	}
	var err error
	switch cmd, rest := args[0], args[1:]; cmd {
	case "serve":
		err = runServe(ctx, rest, env)
	case "get":
		err = runGet(ctx, rest, env)
	case "serve-grpc":
		err = runServeGRPC(ctx, rest, env)
	case "grpc-check":
		err = runGRPCCheck(ctx, rest, env)
	case "tcp":
		err = runTCP(ctx, rest, env)
	case "sleep":
		err = runSleep(ctx, rest, env)
	case "help", "-h", "-help", "--help":
		fmt.Fprint(env.Stdout, usage)
		return ExitOK
	default:
		fmt.Fprintf(env.Stderr, "ambit-testapp: unknown command %q\n%s", cmd, usage)
		return ExitUsage
	}
	var ue usageError
	switch {
	case err == nil:
		return ExitOK
	case errors.Is(err, flag.ErrHelp):
		return ExitOK
	case errors.As(err, &ue):
		fmt.Fprintf(env.Stderr, "ambit-testapp %s: %v\n", args[0], err)
		return ExitUsage
	default:
		fmt.Fprintf(env.Stderr, "ambit-testapp %s: %v\n", args[0], err)
		return ExitFailure
	}
}

// usageError is a wrong command line.
type usageError struct{ error }

func newFlagSet(name string, env Env) *flag.FlagSet {
	fs := flag.NewFlagSet("ambit-testapp "+name, flag.ContinueOnError)
	fs.SetOutput(env.Stderr)
	return fs
}

// parse parses flags placed before, between or after positional arguments and
// checks that there are exactly want positional ones.
func parse(fs *flag.FlagSet, args []string, want ...string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, err
			}
			return nil, usageError{err}
		}
		rest := fs.Args()
		if len(rest) == 0 {
			break
		}
		if used := len(args) - len(rest); used > 0 && args[used-1] == "--" {
			pos = append(pos, rest...)
			break
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
	if len(pos) != len(want) {
		if len(want) == 0 {
			return nil, usageError{fmt.Errorf("takes no arguments, got %q", pos)}
		}
		return nil, usageError{fmt.Errorf("takes %s, got %q", strings.Join(want, " "), pos)}
	}
	return pos, nil
}

func isSet(fs *flag.FlagSet, name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}

func runServe(ctx context.Context, args []string, env Env) error {
	fs := newFlagSet("serve", env)
	cfg := ServerConfig{Hostname: env.Hostname, PodIP: env.PodIP}
	fs.StringVar(&cfg.HTTPAddr, "http", ":8080", "HTTP listen `address`; empty disables HTTP")
	fs.StringVar(&cfg.TCPAddr, "tcp", ":9000", "TCP echo listen `address`; empty disables TCP")
	fs.StringVar(&cfg.Name, "name", env.Hostname, "`name` reported in every HTTP answer")
	fs.DurationVar(&cfg.ShutdownTimeout, "shutdown-timeout", 5*time.Second, "how long to drain open requests and connections on SIGTERM")
	fs.StringVar(&cfg.Upstream, "upstream", "", "http:// `URL` to GET for every request to / before answering (its answer is embedded); ${VAR} is expanded from the environment")
	fs.Float64Var(&cfg.FailRate, "fail-rate", 0, "`fraction` (0 to 1) of requests to / answered 503 at random")
	if _, err := parse(fs, args); err != nil {
		return err
	}
	if cfg.Upstream != "" {
		getenv := env.Getenv
		if getenv == nil {
			getenv = func(string) string { return "" }
		}
		var missing []string
		cfg.Upstream = os.Expand(cfg.Upstream, func(k string) string {
			v := getenv(k)
			if v == "" {
				missing = append(missing, k)
			}
			return v
		})
		if len(missing) > 0 {
			return usageError{fmt.Errorf("--upstream refers to unset environment variables %s (a Service's <NAME>_SERVICE_HOST is only set in pods created after the Service)", strings.Join(missing, ", "))}
		}
	}
	log := slog.New(slog.NewJSONHandler(env.Stdout, nil)).With("app", "ambit-testapp", "name", cfg.Name)
	s, err := NewServer(cfg, log)
	if err != nil {
		return usageError{err}
	}
	return s.Run(ctx)
}

func runGet(ctx context.Context, args []string, env Env) error {
	fs := newFlagSet("get", env)
	cfg := GetConfig{Headers: http.Header{}}
	fs.IntVar(&cfg.Count, "count", 1, "number of requests; also prints an \"N ok, M failed\" summary")
	fs.DurationVar(&cfg.Interval, "interval", 0, "pause between requests")
	fs.DurationVar(&cfg.Timeout, "timeout", 5*time.Second, "timeout of each request")
	fs.IntVar(&cfg.ExpectStatus, "expect-status", http.StatusOK, "status `code` that counts as success")
	fs.StringVar(&cfg.Method, "method", http.MethodGet, "HTTP `method`")
	fs.Var(headerFlag(cfg.Headers), "header", "request header `'Name: value'` (repeatable; Host sets the Host header)")
	pos, err := parse(fs, args, "URL")
	if err != nil {
		return err
	}
	cfg.URL = pos[0]
	if cfg.Count < 1 {
		return usageError{fmt.Errorf("--count %d must be at least 1", cfg.Count)}
	}
	if cfg.Timeout <= 0 {
		return usageError{fmt.Errorf("--timeout %v must be positive", cfg.Timeout)}
	}
	cfg.Summary = isSet(fs, "count")
	return Get(ctx, NewHTTPClient(), cfg, env.Stdout, env.Stderr)
}

func runTCP(ctx context.Context, args []string, env Env) error {
	fs := newFlagSet("tcp", env)
	var cfg TCPConfig
	fs.StringVar(&cfg.Send, "send", "hello\n", "`string` to send and expect back")
	fs.DurationVar(&cfg.Timeout, "timeout", 5*time.Second, "timeout of the whole exchange")
	pos, err := parse(fs, args, "ADDR")
	if err != nil {
		return err
	}
	cfg.Addr = pos[0]
	if cfg.Timeout <= 0 {
		return usageError{fmt.Errorf("--timeout %v must be positive", cfg.Timeout)}
	}
	return TCP(ctx, cfg, env.Stdout)
}

func runServeGRPC(ctx context.Context, args []string, env Env) error {
	fs := newFlagSet("serve-grpc", env)
	cfg := GRPCServerConfig{}
	fs.StringVar(&cfg.Addr, "grpc", ":9090", "gRPC listen `address`")
	fs.StringVar(&cfg.Name, "name", env.Hostname, "`name` sent in the x-served-by header of every answer")
	if _, err := parse(fs, args); err != nil {
		return err
	}
	log := slog.New(slog.NewJSONHandler(env.Stdout, nil)).With("app", "ambit-testapp", "name", cfg.Name)
	return ServeGRPC(ctx, cfg, log)
}

func runGRPCCheck(ctx context.Context, args []string, env Env) error {
	fs := newFlagSet("grpc-check", env)
	cfg := GRPCCheckConfig{}
	md := http.Header{}
	fs.IntVar(&cfg.Count, "count", 1, "number of calls; also prints an \"N ok, M failed\" summary")
	fs.StringVar(&cfg.Service, "service", "", "service `name` in the health check request")
	fs.StringVar(&cfg.Authority, "authority", "", "`:authority` of the calls (default: ADDR)")
	fs.DurationVar(&cfg.Timeout, "timeout", 5*time.Second, "timeout of each call")
	fs.Var(headerFlag(md), "metadata", "request metadata `'Name: value'` (repeatable)")
	pos, err := parse(fs, args, "ADDR")
	if err != nil {
		return err
	}
	cfg.Addr = pos[0]
	if cfg.Count < 1 {
		return usageError{fmt.Errorf("--count %d must be at least 1", cfg.Count)}
	}
	if cfg.Timeout <= 0 {
		return usageError{fmt.Errorf("--timeout %v must be positive", cfg.Timeout)}
	}
	cfg.Summary = isSet(fs, "count")
	cfg.Metadata = metadata.MD{}
	for k, vs := range md {
		cfg.Metadata.Append(strings.ToLower(k), vs...)
	}
	return GRPCCheck(ctx, cfg, env.Stdout, env.Stderr)
}

func runSleep(ctx context.Context, args []string, env Env) error {
	fs := newFlagSet("sleep", env)
	if _, err := parse(fs, args); err != nil {
		return err
	}
	<-ctx.Done()
	return nil
}

// headerFlag collects repeated --header 'Name: value' flags.
type headerFlag http.Header

func (h headerFlag) String() string {
	var parts []string
	for k, vs := range h {
		for _, v := range vs {
			parts = append(parts, k+": "+v)
		}
	}
	return strings.Join(parts, ", ")
}

func (h headerFlag) Set(s string) error {
	k, v, ok := strings.Cut(s, ":")
	if !ok || strings.TrimSpace(k) == "" {
		return fmt.Errorf("header %q is not 'Name: value'", s)
	}
	http.Header(h).Add(strings.TrimSpace(k), strings.TrimSpace(v))
	return nil
}
