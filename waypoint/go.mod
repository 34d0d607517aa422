module ambit.dev/waypoint

go 1.26.0
