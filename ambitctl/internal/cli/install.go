package cli

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/wait"

	"ambit.dev/ambitctl/internal/enrolment"
	"ambit.dev/ambitctl/internal/install"
	"ambit.dev/ambitctl/internal/kube"
	"ambit.dev/ambitctl/internal/manifest"
	"ambit.dev/ambitctl/internal/values"
	"ambit.dev/ambitctl/internal/waypoint"
	"ambit.dev/pkg/enrol"
)

type renderFlags struct {
	files, sets []string
	timeout     time.Duration
}

func (r *renderFlags) add(cmd *cobra.Command) {
	cmd.Flags().StringArrayVarP(&r.files, "values", "f", nil, "values file for the chart (repeatable; later files win)")
	cmd.Flags().StringArrayVar(&r.sets, "set", nil, "chart value key=value (repeatable; helm's --set syntax, applied after -f)")
	cmd.Flags().DurationVar(&r.timeout, "timeout", 5*time.Minute, "how long to wait for each step")
}

// render builds the values and renders the chart into objects.
func (g *globals) render(r *renderFlags) ([]*unstructured.Unstructured, error) {
	vals, err := values.Build(r.files, r.sets, g.env.ReadFile)
	if err != nil {
		return nil, err
	}
	stream, err := g.env.Render(g.namespace, vals)
	if err != nil {
		return nil, fmt.Errorf("rendering the Ambit chart: %w", err)
	}
	return manifest.Parse(stream)
}

func (g *globals) installer(r *renderFlags) (*install.Installer, error) {
	c, err := g.connect()
	if err != nil {
		return nil, err
	}
	return install.New(kube.NewCluster(c.Dynamic, c.Typed, c.Mapper), install.Options{
		Namespace: g.namespace, Out: g.env.Out, Timeout: r.timeout, Terminal: g.env.Terminal})
}

func (g *globals) installCommand() *cobra.Command {
	r := &renderFlags{}
	cmd := &cobra.Command{
		Use:   "install",
		Short: "Install or upgrade Ambit and wait until it runs",
		Long: "install renders Ambit's Helm chart (values from -f and --set), applies every object with\n" +
			"server-side apply (field manager \"ambitctl\"), waits for the CRDs to be established, and then\n" +
			"for the control plane and the ztunnel and node agent DaemonSets to run on every node.\n" +
			"Running it again with the same values changes nothing.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			objs, err := g.render(r)
			if err != nil {
				return err
			}
			in, err := g.installer(r)
			if err != nil {
				return err
			}
			return in.Install(cmd.Context(), objs)
		},
	}
	r.add(cmd)
	return cmd
}

func (g *globals) uninstallCommand() *cobra.Command {
	r := &renderFlags{}
	var deleteCRDs, unenroll bool
	cmd := &cobra.Command{
		Use:   "uninstall",
		Short: "Remove Ambit (keeps the CRDs and your policies unless --delete-crds)",
		Long: "uninstall deletes what install applied, in reverse order: the control plane and the\n" +
			"DaemonSets first, waiting for their pods to stop (each node agent removes Ambit's CNI\n" +
			"configuration from its node), then RBAC and configuration. The CRDs, and with them every\n" +
			"AuthorizationPolicy and PeerAuthentication, stay unless --delete-crds; the namespace stays.\n" +
			"It refuses while namespaces are enrolled or pods are captured (they would lose every\n" +
			"connection with ztunnel gone), or while waypoints you created are deployed; --unenroll\n" +
			"takes them out of the mesh first and deletes those waypoints. Waypoints the control plane\n" +
			"provisioned, their Service bindings and the GatewayClass are removed once it has stopped.\n" +
			"Pass the same -f/--set values as to install.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			objs, err := g.render(r)
			if err != nil {
				return err
			}
			in, err := g.installer(r)
			if err != nil {
				return err
			}
			c, err := g.connect()
			if err != nil {
				return err
			}
			gws, err := kube.AllWaypoints(cmd.Context(), c.Typed, c.Dynamic)
			if err != nil {
				return err
			}
			if err := waypoint.UninstallBlocker(gws, unenroll); err != nil {
				return err
			}
			if err := g.leaveMesh(cmd.Context(), unenroll, r.timeout); err != nil {
				return err
			}
			return in.Uninstall(cmd.Context(), objs, deleteCRDs, func(ctx context.Context) ([]string, error) {
				return kube.RemoveWaypoints(ctx, c.Typed, c.Dynamic)
			})
		},
	}
	r.add(cmd)
	cmd.Flags().BoolVar(&deleteCRDs, "delete-crds", false, "also delete Ambit's CRDs and so every policy object")
	cmd.Flags().BoolVar(&unenroll, "unenroll", false, "first unenroll every enrolled namespace and wait until no pod is captured; also delete the waypoints you created")
	return cmd
}

// leaveMesh makes sure no pod is in the mesh before uninstalling: without
// unenroll it refuses when some are; with it, it unenrolls every enrolled
// namespace and waits until the node agents have released every pod.
func (g *globals) leaveMesh(ctx context.Context, unenroll bool, timeout time.Duration) error {
	c, err := g.connect()
	if err != nil {
		return err
	}
	nss, captured, err := kube.MeshMembers(ctx, c.Typed)
	if err != nil {
		return err
	}
	blocker := enrolment.UninstallBlocker(nss, captured)
	if blocker == nil {
		return nil
	}
	if !unenroll {
		return blocker
	}
	for _, ns := range nss {
		lines, err := kube.Unenroll(ctx, c.Typed, ns)
		if err != nil {
			return err
		}
		g.println(lines...)
	}
	err = wait.PollUntilContextTimeout(ctx, time.Second, timeout, true, func(ctx context.Context) (bool, error) {
		_, captured, err = kube.MeshMembers(ctx, c.Typed)
		return err == nil && len(captured) == 0, err
	})
	if err != nil {
		return fmt.Errorf("pods still captured after %v: %s (a pod labelled %s=%s itself stays enrolled: remove that label): %w",
			timeout, strings.Join(captured, ", "), enrol.LabelDataplaneMode, enrol.DataplaneModeAmbient, err)
	}
	g.println("every pod left the mesh")
	return nil
}
