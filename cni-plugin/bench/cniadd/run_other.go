//go:build !linux

package main

import (
	"context"
	"errors"
	"io"
)

func run(context.Context, options, []string, io.Writer, io.Writer) error {
	return errors.New("this bench needs Linux (network namespaces, CNI plugins, iptables)")
}
