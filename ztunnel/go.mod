module ambit.dev/ztunnel

go 1.26.0
