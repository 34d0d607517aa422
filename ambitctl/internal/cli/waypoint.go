package cli

import (
	"errors"
	"time"

	"github.com/spf13/cobra"

	"ambit.dev/ambitctl/internal/kube"
	"ambit.dev/ambitctl/internal/waypoint"
)

// ErrWaypointNotProgrammed is returned by waypoint apply --wait when the
// waypoint did not become Programmed in time; the reasons are printed.
var ErrWaypointNotProgrammed = errors.New("the waypoint did not become Programmed in time (see above)")

// waypointPollInterval is how often apply --wait reads the Gateway.
const waypointPollInterval = time.Second

// waypointFlags are the flags the waypoint subcommands share. -n shadows
// the root's -n (Ambit's namespace): here it is the waypoint's namespace.
type waypointFlags struct {
	namespace string
	name      string
	timeout   time.Duration
}

func (f *waypointFlags) needNamespace() error {
	if f.namespace == "" {
		return errors.New("-n/--namespace is required: the namespace of the waypoint (ambitctl waypoint list -A shows them all)")
	}
	return nil
}

func (g *globals) waypointCommand() *cobra.Command {
	f := &waypointFlags{}
	cmd := &cobra.Command{
		Use:   "waypoint",
		Short: "Create, list, inspect and delete waypoints (the L7 proxies of a namespace)",
		Long: "A waypoint is a Gateway API Gateway of class " + waypoint.Class + " (one listener " + waypoint.ListenerName + ", port 15008,\n" +
			"protocol HBONE); Ambit's control plane deploys it. A namespace, Service or pod labelled\n" +
			waypoint.LabelUseWaypoint + "=<name> sends its traffic through the waypoint of that name in its own\n" +
			"namespace (or in the one " + waypoint.LabelUseWaypointNamespace + " names); " + waypoint.LabelUseWaypoint + "=" + waypoint.UseWaypointNone + " opts out.",
	}
	cmd.PersistentFlags().StringVarP(&f.namespace, "namespace", "n", "", "the namespace of the waypoint")
	cmd.PersistentFlags().DurationVar(&f.timeout, "timeout", 2*time.Minute, "how long to wait for the apiserver (and, for apply --wait, for the waypoint)")
	cmd.AddCommand(g.waypointApply(f), g.waypointList(f), g.waypointStatus(f), g.waypointDelete(f))
	return cmd
}

func nameFlag(cmd *cobra.Command, f *waypointFlags) {
	cmd.Flags().StringVar(&f.name, "name", waypoint.DefaultName, "the waypoint's (Gateway's) name")
}

func (g *globals) waypointApply(f *waypointFlags) *cobra.Command {
	var forTraffic string
	var enroll, wait bool
	cmd := &cobra.Command{
		Use:   "apply -n <namespace>",
		Short: "Create or update a waypoint (server-side apply of its Gateway)",
		Long: "apply creates or updates the Gateway <name> of class " + waypoint.Class + " in the namespace, for\n" +
			"service traffic (addressed to a Service), workload traffic (addressed to a pod IP) or all.\n" +
			"--enroll-namespace also labels the namespace " + waypoint.LabelUseWaypoint + "=<name>, so its Services\n" +
			"use it. With --wait (the default) it waits until the Gateway is Programmed.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := f.needNamespace(); err != nil {
				return err
			}
			ft, err := waypoint.ParseFor(forTraffic)
			if err != nil {
				return err
			}
			c, err := g.connect()
			if err != nil {
				return err
			}
			ctx, cancel := withTimeout(cmd.Context(), f.timeout)
			defer cancel()
			lines, err := kube.ApplyWaypoint(ctx, c.Typed, c.Dynamic, f.namespace, f.name, ft, enroll)
			if err != nil {
				return err
			}
			g.println(lines...)
			if !wait {
				return nil
			}
			info, err := kube.WaitWaypoint(ctx, c.Dynamic, f.namespace, f.name, waypointPollInterval, func(l string) { g.println(l) })
			if ctx.Err() != nil && cmd.Context().Err() == nil {
				g.println(waypoint.TimeoutLines(info)...)
				return ErrWaypointNotProgrammed
			}
			return err
		},
	}
	nameFlag(cmd, f)
	cmd.Flags().StringVar(&forTraffic, "for", waypoint.ForService, "the traffic it takes: service, workload or all")
	cmd.Flags().BoolVar(&enroll, "enroll-namespace", false, "also label the namespace "+waypoint.LabelUseWaypoint+"=<name>")
	cmd.Flags().BoolVar(&wait, "wait", true, "wait until the waypoint is Programmed (up to --timeout)")
	return cmd
}

func (g *globals) waypointList(f *waypointFlags) *cobra.Command {
	var all bool
	cmd := &cobra.Command{
		Use:   "list [-n <namespace> | -A]",
		Short: "List the waypoints of a namespace, or of every namespace",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if all && f.namespace != "" {
				return errors.New("-n and -A exclude each other: give one")
			}
			scope := "in any namespace"
			if f.namespace != "" {
				scope = "in namespace " + f.namespace
			}
			c, err := g.connect()
			if err != nil {
				return err
			}
			ctx, cancel := withTimeout(cmd.Context(), f.timeout)
			defer cancel()
			gws, err := kube.ListWaypoints(ctx, c.Typed, c.Dynamic, f.namespace)
			if err != nil {
				return err
			}
			return waypoint.RenderList(g.env.Out, gws, scope)
		},
	}
	cmd.Flags().BoolVarP(&all, "all-namespaces", "A", false, "every namespace (the default without -n)")
	return cmd
}

func (g *globals) waypointStatus(f *waypointFlags) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "status -n <namespace>",
		Short: "A waypoint's conditions, its pods, and what is bound to it",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := f.needNamespace(); err != nil {
				return err
			}
			c, err := g.connect()
			if err != nil {
				return err
			}
			ctx, cancel := withTimeout(cmd.Context(), f.timeout)
			defer cancel()
			s, err := kube.ReadWaypointStatus(ctx, c.Typed, c.Dynamic, f.namespace, f.name)
			if err != nil {
				return err
			}
			return waypoint.RenderStatus(g.env.Out, s)
		},
	}
	nameFlag(cmd, f)
	return cmd
}

func (g *globals) waypointDelete(f *waypointFlags) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "delete -n <namespace>",
		Short: "Delete a waypoint (and the namespace's label naming it)",
		Long: "delete removes the namespace's " + waypoint.LabelUseWaypoint + " label when it names the waypoint, then\n" +
			"deletes the Gateway; its Deployment, Service and ServiceAccount go with it. Services and pods\n" +
			"whose own label still names it are listed: their traffic goes directly once it is gone.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := f.needNamespace(); err != nil {
				return err
			}
			c, err := g.connect()
			if err != nil {
				return err
			}
			ctx, cancel := withTimeout(cmd.Context(), f.timeout)
			defer cancel()
			lines, err := kube.DeleteWaypoint(ctx, c.Typed, c.Dynamic, f.namespace, f.name)
			if err != nil {
				return err
			}
			g.println(lines...)
			return nil
		},
	}
	nameFlag(cmd, f)
	return cmd
}
