module ambit.dev/cni-plugin

go 1.26.0
