package cli

import (
	"errors"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"ambit.dev/ambitctl/internal/kube"
	"ambit.dev/ambitctl/internal/migrate"
)

func (g *globals) migrateCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "migrate",
		Short: "Move a namespace from Istio's sidecar mode to Ambit",
		Long: "migrate converts a namespace's Istio objects (VirtualService, DestinationRule,\n" +
			"AuthorizationPolicy, PeerAuthentication, Sidecar) into Ambit and Gateway API objects.\n" +
			"plan shows the conversion and what does not map; apply and rollback are not there yet.",
	}
	cmd.AddCommand(g.migratePlan())
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
