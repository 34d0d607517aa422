package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"

	"ambit.dev/ambitctl/internal/kube"
	"ambit.dev/ambitctl/internal/migrate"
	"ambit.dev/pkg/enrol"
)

func (g *globals) migrateCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "migrate",
		Short: "Move a namespace from Istio's sidecar mode to Ambit",
		Long: "migrate converts a namespace's Istio objects (VirtualService, DestinationRule,\n" +
			"AuthorizationPolicy, PeerAuthentication, Sidecar) into Ambit and Gateway API objects.\n" +
			"plan shows the conversion and what does not map; apply switches the namespace to Ambit\n" +
			"step by step (resumable); rollback undoes what apply recorded.",
	}
	cmd.AddCommand(g.migratePlan(), g.migrateApply(), g.migrateRollback())
	return cmd
}

func (g *globals) migratePlan() *cobra.Command {
	var namespace, output string
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "plan -n <namespace> [-o table|yaml]",
		Short: "Show what a namespace's Istio objects become under Ambit, and what does not map",
		Long: "plan reads the namespace's Istio objects (networking.istio.io/v1, security.istio.io/v1) and\n" +
			"its Services and prints, per object, the Ambit / Gateway API objects it becomes (HTTPRoute,\n" +
			"HTTPFault, BackendPolicy, AuthorizationPolicy, PeerAuthentication) and each field that does\n" +
			"not map, with the reason. -o yaml prints the objects as a stream kubectl apply -f accepts,\n" +
			"with what did not map as comments. It changes nothing in the cluster.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if namespace == "" {
				return errors.New("-n/--namespace is required: the namespace whose Istio objects to convert")
			}
			if output != "table" && output != "yaml" {
				return fmt.Errorf("-o %q: give table or yaml", output)
			}
			c, err := g.connect()
			if err != nil {
				return err
			}
			ctx, cancel := withTimeout(cmd.Context(), timeout)
			defer cancel()
			in, err := kube.ReadMigrationInputs(ctx, c.Istio, c.Typed, c.Dynamic, namespace)
			if err != nil {
				return err
			}
			plan := migrate.Convert(in)
			if output == "yaml" {
				return plan.YAML(g.env.Out)
			}
			return plan.Table(g.env.Out)
		},
	}
	// -n shadows the root's -n (Ambit's namespace), as under waypoint.
	cmd.Flags().StringVarP(&namespace, "namespace", "n", "", "the namespace to migrate")
	cmd.Flags().StringVarP(&output, "output", "o", "table", "table or yaml")
	cmd.Flags().DurationVar(&timeout, "timeout", time.Minute, "how long to wait for the apiserver")
	return cmd
}

// switchCommand builds migrate apply / rollback: -n, --dry-run and
// --timeout, then dry (print what would be done) or run.
func (g *globals) switchCommand(cmd *cobra.Command, verb, timeoutHelp string,
	dry func(ctx context.Context, c *kube.Clients, ns string, w io.Writer) error,
	run func(ctx context.Context, c *kube.Clients, ns string, o kube.SwitchOptions) error) *cobra.Command {
	var namespace string
	var dryRun bool
	var timeout time.Duration
	cmd.Args = cobra.NoArgs
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if namespace == "" {
			return fmt.Errorf("-n/--namespace is required: the namespace to %s", verb)
		}
		c, err := g.connect()
		if err != nil {
			return err
		}
		if dryRun {
			fmt.Fprintf(g.env.Out, "%s -n %s would (dry run, nothing changed):\n", cmd.CommandPath(), namespace)
			return dry(cmd.Context(), c, namespace, g.env.Out)
		}
		return run(cmd.Context(), c, namespace, kube.SwitchOptions{
			StepTimeout: timeout, Out: g.env.Out, AmbitNamespace: g.namespace, Now: g.env.Now})
	}
	cmd.Flags().StringVarP(&namespace, "namespace", "n", "", "the namespace to "+verb)
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "print what would be done, change nothing")
	cmd.Flags().DurationVar(&timeout, "timeout", 5*time.Minute, timeoutHelp)
	return cmd
}

func (g *globals) migrateApply() *cobra.Command {
	return g.switchCommand(&cobra.Command{
		Use:   "apply -n <namespace> [--dry-run] [--timeout 5m]",
		Short: "Switch a namespace from Istio sidecars to Ambit, step by step",
		Long: "apply runs, in order, each step verified before the next: server-side apply the converted\n" +
			"objects (as migrate plan shows them) and wait until each is Accepted; wait for the waypoint the\n" +
			"control plane provisions when an object is L7; label the namespace " + enrol.LabelDataplaneMode + "=" + enrol.DataplaneModeAmbient + ";\n" +
			"remove the injection labels (istio-injection, istio.io/rev); restart, one at a time, the\n" +
			"Deployments, StatefulSets and DaemonSets whose pods have sidecars (kubectl rollout restart's\n" +
			"annotation; a sidecar written into the template by istioctl kube-inject is taken out and kept\n" +
			"for rollback), each once its PodDisruptionBudgets allow a disruption, evicting the pods of\n" +
			"OnDelete workloads one at a time, and wait for each rollout; pods with sidecars that no such\n" +
			"controller owns are named and left to you; verify every pod is captured, none has a sidecar\n" +
			"and the ztunnel of its node holds a Valid certificate of its SPIFFE identity, then report the\n" +
			"inbound HBONE (mTLS) connections the ztunnels counted for the namespace. Progress is recorded\n" +
			"in the namespace annotation " + migrate.AnnotationMigration + ": re-running continues where an interrupted run\n" +
			"stopped, and migrate rollback undoes it. --dry-run prints the steps and changes nothing.",
	}, "migrate", "how long each waiting step (objects Accepted, waypoint, each workload's PodDisruptionBudgets, each rollout, verify) may take",
		func(ctx context.Context, c *kube.Clients, ns string, w io.Writer) error {
			st, _, err := kube.ReadSwitchState(ctx, c, ns)
			if err != nil {
				return err
			}
			actions := migrate.PlanSwitch(st)
			for i, a := range actions {
				state := "todo"
				if a.Done {
					state = "done"
				}
				fmt.Fprintf(w, "[%d/%d] %s (%s): %s\n", i+1, len(actions), a.Step, state, a.What)
			}
			return nil
		}, kube.MigrateApply)
}

func (g *globals) migrateRollback() *cobra.Command {
	return g.switchCommand(&cobra.Command{
		Use:   "rollback -n <namespace> [--dry-run] [--timeout 5m]",
		Short: "Undo migrate apply on a namespace",
		Long: "rollback reads the namespace annotation " + migrate.AnnotationMigration + " migrate apply wrote and undoes what it\n" +
			"records: puts the injection labels back and the " + enrol.LabelDataplaneMode + " label as it was, restarts the\n" +
			"workloads apply restarted (putting back a sidecar it took out of a template; with Istio's\n" +
			"injector running, the new pods get their sidecars from it), deletes the objects apply made\n" +
			"(only those still annotated " + migrate.AnnotationMigratedFrom + " and managed by ambitctl) and removes the\n" +
			"annotation. It records its progress the same way, so it can be re-run.",
	}, "roll back", "how long each rollout may take",
		func(ctx context.Context, c *kube.Clients, ns string, w io.Writer) error {
			rec, err := kube.ReadMigrationRecord(ctx, c, ns)
			if err != nil {
				return err
			}
			for _, l := range migrate.PlanRollback(ns, rec) {
				fmt.Fprintf(w, "- %s\n", l)
			}
			return nil
		}, kube.MigrateRollback)
}
