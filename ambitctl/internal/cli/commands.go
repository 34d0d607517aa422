package cli

import (
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"ambit.dev/ambitctl/internal/check"
	"ambit.dev/ambitctl/internal/components"
	"ambit.dev/ambitctl/internal/enrolment"
	"ambit.dev/ambitctl/internal/kube"
	"ambit.dev/ambitctl/internal/ztunneladmin"
	"ambit.dev/pkg/enrol"
	"ambit.dev/ztunnel/pkg/admincli"
)

func (g *globals) checkCommand() *cobra.Command {
	var pre bool
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "check",
		Short: "Check that Ambit runs (or, with --pre, that it can be installed)",
		Long: "check verifies an installation: CRDs established, control plane available, ztunnel and\n" +
			"node agent ready on every node, mesh root certificate published.\n" +
			"check --pre verifies a cluster before installing: apiserver version, nodes Ready with a CNI,\n" +
			fmt.Sprintf("kernel %s or newer, no conflicting mesh (Istio ambient, Linkerd, Cilium's exclusive CNI).\n", check.MinKernel) +
			"Every failure says how to fix it; the exit code is non-zero when a check fails.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := g.connect()
			if err != nil {
				return err
			}
			ctx, cancel := withTimeout(cmd.Context(), timeout)
			defer cancel()
			var results []check.Result
			if pre {
				cl, err := kube.ReadPreflight(ctx, c.Typed, g.namespace)
				if err != nil {
					return err
				}
				results = check.Preflight(cl)
			} else {
				in, err := kube.ReadInstall(ctx, c.Typed, c.Dynamic, g.namespace)
				if err != nil {
					return err
				}
				results = check.PostInstall(in)
			}
			g.println(check.Lines(results)...)
			if check.Failed(results) {
				return ErrChecksFailed
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&pre, "pre", false, "pre-flight checks, before installing")
	cmd.Flags().DurationVar(&timeout, "timeout", 30*time.Second, "how long to wait for the apiserver")
	return cmd
}

func (g *globals) enrollCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "enroll <namespace>",
		Short: "Put a namespace in the mesh (label " + enrol.LabelDataplaneMode + "=" + enrol.DataplaneModeAmbient + ")",
		Long: "enroll labels the namespace " + enrol.LabelDataplaneMode + "=" + enrol.DataplaneModeAmbient + ". The node agents capture its\n" +
			"running pods without restarting them, and its new pods as they start; from then on their\n" +
			"connections are carried over mutual TLS by ztunnel. Pods labelled " + enrol.LabelDataplaneMode + "=none,\n" +
			"host-network pods and pods with an Istio sidecar stay out.",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.connect()
			if err != nil {
				return err
			}
			lines, err := kube.Enroll(cmd.Context(), c.Typed, args[0], g.namespace)
			if err != nil {
				return err
			}
			g.println(lines...)
			return nil
		},
	}
}

func (g *globals) unenrollCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "unenroll <namespace>",
		Short: "Take a namespace out of the mesh (removes the label " + enrol.LabelDataplaneMode + ")",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.connect()
			if err != nil {
				return err
			}
			lines, err := kube.Unenroll(cmd.Context(), c.Typed, args[0])
			if err != nil {
				return err
			}
			g.println(lines...)
			return nil
		},
	}
}

func (g *globals) statusCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "status",
		Short: "Enrolled namespaces, their pods' redirection state, and ztunnel on each node",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := g.connect()
			if err != nil {
				return err
			}
			s, err := kube.ReadStatus(cmd.Context(), c.Typed, g.namespace)
			if err != nil {
				return err
			}
			return enrolment.Render(g.env.Out, s)
		},
	}
}

func (g *globals) ztunnelCommand() *cobra.Command {
	var node, output string
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "ztunnel",
		Short: "What ztunnel holds on each node: certs, workloads, services, connections, policies",
		Long: "ztunnel reads the admin port of the ztunnel on each node (127.0.0.1:15000 there) through the\n" +
			"apiserver's port-forward, so it works from anywhere kubectl does, and prints the tables\n" +
			"ztunnel-admin prints on the node: one section per node, or only --node's.",
	}
	cmd.PersistentFlags().StringVar(&node, "node", "", "only the ztunnel of this node (default: every node)")
	cmd.PersistentFlags().StringVarP(&output, "output", "o", admincli.OutputTable, "output format: table or json")
	cmd.PersistentFlags().DurationVar(&timeout, "timeout", 30*time.Second, "how long to wait for the answers")
	for _, v := range admincli.Views() {
		cmd.AddCommand(&cobra.Command{
			Use:   v.Name,
			Short: v.Short,
			Args:  cobra.NoArgs,
			RunE: func(cmd *cobra.Command, _ []string) error {
				if err := admincli.CheckOutput(output); err != nil {
					return err
				}
				c, err := g.connect()
				if err != nil {
					return err
				}
				ctx, cancel := withTimeout(cmd.Context(), timeout)
				defer cancel()
				pods, err := kube.ZtunnelPods(ctx, c.Typed, g.namespace)
				if err != nil {
					return err
				}
				targets, err := ztunneladmin.Targets(g.namespace, pods, node)
				if err != nil {
					return err
				}
				var gt ztunneladmin.Getter = kube.NewPortForwarder(c.Config, c.Typed)
				if g.env.Getter != nil {
					gt = g.env.Getter(c)
				}
				return ztunneladmin.Print(ctx, g.env.Out, gt, targets, ztunneladmin.Options{
					View: v, Output: output, Port: components.ZtunnelAdminPort, Now: g.env.Now(), Sections: node == ""})
			},
		})
	}
	return cmd
}

func (g *globals) versionCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "ambitctl's version, and the control plane's image when the cluster is reachable",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			g.println("ambitctl: " + g.env.Version)
			c, err := g.connect()
			if err != nil {
				g.println("control plane: unknown (" + err.Error() + ")")
				return nil
			}
			ctx, cancel := withTimeout(cmd.Context(), 10*time.Second)
			defer cancel()
			images, found, err := kube.ControlPlaneImages(ctx, c.Typed, g.namespace)
			switch {
			case err != nil:
				g.println("control plane: unknown (cannot read it: " + err.Error() + ")")
			case !found:
				g.println(fmt.Sprintf("control plane: not installed in namespace %s", g.namespace))
			default:
				g.println("control plane: " + strings.Join(images, ", "))
			}
			return nil
		},
	}
}
