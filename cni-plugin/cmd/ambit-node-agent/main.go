// Command ambit-node-agent is the per-node DaemonSet (privileged,
// hostNetwork, hostPID) that enrols pods into the mesh: it installs the
// redirection rules inside each enrolled pod's network namespace and hands
// the namespace to ztunnel over ZDS. See cni-plugin/README.md.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"ambit.dev/cni-plugin/internal/app"
	"ambit.dev/cni-plugin/internal/config"
	"ambit.dev/cni-plugin/internal/install"
)

func main() {
	cfg, err := config.FromOS()
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	log := cfg.Logger(os.Stderr)

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	client, err := app.NewKubeClient(cfg.Kubeconfig)
	if err != nil {
		log.Error("ambit-node-agent cannot start", "error", err)
		os.Exit(1)
	}
	opts := app.Options{}
	var installer *install.Installer
	if cfg.CNI.Enabled {
		installer, err = install.New(install.Config{
			CNIBinDir: cfg.CNI.BinDir, CNIConfDir: cfg.CNI.ConfDir, HostCNIConfDir: cfg.CNI.HostConfDir,
			PluginBinary: cfg.CNI.PluginBinary, LookupBinary: cfg.CNI.LookupBinary,
			APIServerURL: cfg.CNI.APIServerURL, AgentSocket: cfg.CNISocket,
		}, log)
		if err != nil {
			log.Error("ambit-node-agent cannot start", "error", err)
			os.Exit(1)
		}
		opts.Installer = installer
	}
	a, err := app.New(cfg, client, log, opts)
	if err != nil {
		log.Error("ambit-node-agent cannot start", "error", err)
		os.Exit(1)
	}
	runErr := a.Run(ctx)
	if installer != nil {
		// Uninstall takes the plugin off the node; a restart keeps it.
		if gone, why := app.Uninstalling(context.Background(), client, cfg.CNI.Namespace, cfg.CNI.DaemonSet); gone {
			if err := installer.Uninstall(); err != nil {
				log.Error("removing ambit-cni from the node", "reason", why, "error", err)
			} else {
				log.Info("ambit-cni removed from the node", "reason", why)
			}
		} else {
			log.Info("keeping ambit-cni installed", "reason", why)
		}
	}
	if runErr != nil {
		log.Error("ambit-node-agent failed", "error", runErr)
		os.Exit(1)
	}
}
