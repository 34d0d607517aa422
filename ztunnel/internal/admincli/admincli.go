// Package admincli is the ztunnel-admin command: it reads a ztunnel's admin
// endpoints (loopback only, so it runs on the node) and prints certificates,
// workloads, services and connections as tables or JSON.
package admincli

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"ambit.dev/ztunnel/internal/admin"
)

// DefaultAdminAddr is where ztunnel's admin port listens.
const DefaultAdminAddr = "127.0.0.1:15000"

// Output formats of -o.
const (
	OutputTable = "table"
	OutputJSON  = "json"
)

// Env is what the command needs from its surroundings; tests inject fakes.
type Env struct {
	Out io.Writer
	// Now is the clock for AGE and VALID columns (default time.Now).
	Now func() time.Time
	// HTTPClient defaults to a client with a 10s timeout.
	HTTPClient *http.Client
}

type options struct {
	env     Env
	addr    string
	output  string
	timeout time.Duration
}

// NewCommand returns the ztunnel-admin root command.
func NewCommand(env Env) *cobra.Command {
	if env.Now == nil {
		env.Now = time.Now
	}
	if env.HTTPClient == nil {
		env.HTTPClient = &http.Client{}
	}
	o := &options{env: env}
	root := &cobra.Command{
		Use:   "ztunnel-admin",
		Short: "Inspect the ztunnel running on this node",
		Long: "ztunnel-admin reads the admin port of the ztunnel on this node (loopback only)\n" +
			"and prints its certificates, workloads, services and connections.",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetOut(env.Out)
	root.PersistentFlags().StringVar(&o.addr, "admin-addr", DefaultAdminAddr, "address of the ztunnel admin port")
	root.PersistentFlags().StringVarP(&o.output, "output", "o", OutputTable, "output format: table or json")
	root.PersistentFlags().DurationVar(&o.timeout, "timeout", 10*time.Second, "how long to wait for ztunnel")

	root.AddCommand(
		o.listCommand("certs", "Certificates ztunnel holds, per identity (leaf, intermediates, roots)", "/certs",
			func(w io.Writer, body []byte, now time.Time) error {
				var v []admin.CertDump
				if err := json.Unmarshal(body, &v); err != nil {
					return err
				}
				return RenderCerts(w, v, now)
			}),
		o.listCommand("workloads", "Workloads ztunnel knows about", "/workloads",
			func(w io.Writer, body []byte, _ time.Time) error {
				var v []admin.WorkloadDump
				if err := json.Unmarshal(body, &v); err != nil {
					return err
				}
				return RenderWorkloads(w, v)
			}),
		o.listCommand("services", "Services ztunnel knows about", "/services",
			func(w io.Writer, body []byte, _ time.Time) error {
				var v []admin.ServiceDump
				if err := json.Unmarshal(body, &v); err != nil {
					return err
				}
				return RenderServices(w, v)
			}),
		o.listCommand("connections", "Connections ztunnel is proxying now", "/connections",
			func(w io.Writer, body []byte, now time.Time) error {
				var v []admin.ConnDump
				if err := json.Unmarshal(body, &v); err != nil {
					return err
				}
				return RenderConnections(w, v, now)
			}),
		&cobra.Command{
			Use:   "config-dump",
			Short: "The whole /config_dump, as JSON",
			Args:  cobra.NoArgs,
			RunE: func(cmd *cobra.Command, _ []string) error {
				body, err := o.fetch(cmd.Context(), "/config_dump")
				if err != nil {
					return err
				}
				var d admin.ConfigDump
				if err := json.Unmarshal(body, &d); err != nil {
					return o.decodeErr("/config_dump", err)
				}
				_, err = cmd.OutOrStdout().Write(body)
				return err
			},
		},
	)
	return root
}

type renderFunc func(w io.Writer, body []byte, now time.Time) error

func (o *options) listCommand(use, short, path string, render renderFunc) *cobra.Command {
	return &cobra.Command{
		Use:   use,
		Short: short,
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if o.output != OutputTable && o.output != OutputJSON {
				return fmt.Errorf("unknown output format %q: use -o table or -o json", o.output)
			}
			body, err := o.fetch(cmd.Context(), path)
			if err != nil {
				return err
			}
			// Decode even for JSON output, so a wrong port is reported
			// instead of printed.
			var buf bytes.Buffer
			if err := render(&buf, body, o.env.Now()); err != nil {
				return o.decodeErr(path, err)
			}
			out := buf.Bytes()
			if o.output == OutputJSON {
				out = body
			}
			_, err = cmd.OutOrStdout().Write(out)
			return err
		},
	}
}

// fetch GETs path from the admin port and returns the body of a 200 answer.
func (o *options) fetch(ctx context.Context, path string) ([]byte, error) {
	if ctx == nil {
		ctx = context.Background()
	}
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	url := "http://" + o.addr + path
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, fmt.Errorf("bad --admin-addr %q (want host:port, e.g. %s): %w", o.addr, DefaultAdminAddr, err)
	}
	resp, err := o.env.HTTPClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("cannot reach ztunnel admin at %s: is ztunnel running on this node? the admin port only listens on loopback: %w", o.addr, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("reading the answer of ztunnel admin at %s to GET %s: %w", o.addr, path, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("ztunnel admin at %s answered %s to GET %s (is --admin-addr the ztunnel admin port, and is ztunnel-admin as new as ztunnel?): %s",
			o.addr, resp.Status, path, strings.TrimSpace(string(body)))
	}
	return body, nil
}

func (o *options) decodeErr(path string, err error) error {
	return fmt.Errorf("the answer of %s to GET %s is not ztunnel admin JSON (is --admin-addr the ztunnel admin port?): %w", o.addr, path, err)
}
