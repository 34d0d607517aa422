// Package admincli is the ztunnel-admin command: it reads a ztunnel's admin
// endpoints (loopback only, so it runs on the node) and prints certificates,
// workloads, services and connections as tables or JSON. Its Views and
// Render functions are public so ambitctl prints the same tables through a
// port-forward.
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

	"ambit.dev/ztunnel/pkg/adminapi"
)

// DefaultAdminAddr is where ztunnel's admin port listens.
const DefaultAdminAddr = adminapi.DefaultAdminAddr

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

	for _, v := range Views() {
		root.AddCommand(o.viewCommand(v))
	}
	root.AddCommand(&cobra.Command{
		Use:   "config-dump",
		Short: "The whole /config_dump, as JSON",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			body, err := o.fetch(cmd.Context(), adminapi.PathConfigDump)
			if err != nil {
				return err
			}
			var d adminapi.ConfigDump
			if err := json.Unmarshal(body, &d); err != nil {
				return o.decodeErr(adminapi.PathConfigDump, err)
			}
			_, err = cmd.OutOrStdout().Write(body)
			return err
		},
	})
	return root
}

// View is one of the tables ztunnel-admin prints: the subcommand, the admin
// endpoint it reads and how its JSON is rendered. ambitctl builds its
// `ambitctl ztunnel ...` subcommands from the same list, so both print the
// same tables.
type View struct {
	// Name is the subcommand: certs, workloads, services, connections or
	// policies.
	Name string
	// Short is the subcommand's one-line help.
	Short string
	// Path is the admin endpoint the view reads (an adminapi.Path* constant).
	Path   string
	render func(w io.Writer, body []byte, now time.Time) error
}

// Views returns the tables ztunnel-admin prints, in help order.
func Views() []View {
	return []View{
		{Name: "certs", Short: "Certificates ztunnel holds, per identity (leaf, intermediates, roots)", Path: adminapi.PathCerts,
			render: renderJSON(RenderCerts)},
		{Name: "workloads", Short: "Workloads ztunnel knows about", Path: adminapi.PathWorkloads,
			render: renderJSON(func(w io.Writer, v []adminapi.WorkloadDump, _ time.Time) error { return RenderWorkloads(w, v) })},
		{Name: "services", Short: "Services ztunnel knows about", Path: adminapi.PathServices,
			render: renderJSON(func(w io.Writer, v []adminapi.ServiceDump, _ time.Time) error { return RenderServices(w, v) })},
		{Name: "connections", Short: "Connections ztunnel is proxying now", Path: adminapi.PathConnections,
			render: renderJSON(RenderConnections)},
		{Name: "policies", Short: "Authorization and peer-authentication policies ztunnel enforces", Path: adminapi.PathPolicies,
			render: renderJSON(func(w io.Writer, v []adminapi.PolicyDump, _ time.Time) error { return RenderPolicies(w, v) })},
	}
}

// renderJSON decodes the body into T before rendering it.
func renderJSON[T any](render func(io.Writer, T, time.Time) error) func(io.Writer, []byte, time.Time) error {
	return func(w io.Writer, body []byte, now time.Time) error {
		var v T
		if err := json.Unmarshal(body, &v); err != nil {
			return err
		}
		return render(w, v, now)
	}
}

// CheckOutput returns an error naming the accepted formats unless output is
// OutputTable or OutputJSON.
func CheckOutput(output string) error {
	if output != OutputTable && output != OutputJSON {
		return fmt.Errorf("unknown output format %q: use -o table or -o json", output)
	}
	return nil
}

// Format turns body, the JSON answer of v.Path, into what is printed for
// output: the table (judged at now), or body itself for OutputJSON. The body
// is decoded for JSON output too, so an answer that is not ztunnel admin JSON
// is reported instead of printed; that error is the JSON decoding error.
func (v View) Format(body []byte, output string, now time.Time) ([]byte, error) {
	if err := CheckOutput(output); err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	if err := v.render(&buf, body, now); err != nil {
		return nil, err
	}
	if output == OutputJSON {
		return body, nil
	}
	return buf.Bytes(), nil
}

func (o *options) viewCommand(v View) *cobra.Command {
	return &cobra.Command{
		Use:   v.Name,
		Short: v.Short,
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := CheckOutput(o.output); err != nil {
				return err
			}
			body, err := o.fetch(cmd.Context(), v.Path)
			if err != nil {
				return err
			}
			out, err := v.Format(body, o.output, o.env.Now())
			if err != nil {
				return o.decodeErr(v.Path, err)
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
