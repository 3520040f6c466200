package gateway

import "runtime/debug"

// Version is the gateway's version, the one `gateway version` prints, the start-up log line
// names, deliveries send as User-Agent: webhook-gateway/<Version> and traces carry as
// service.version. It is set at build time with
// -ldflags "-X github.com/webhookgw/gateway/gateway.Version=v1.2.3"; left at "dev", it is
// the main module's version from the build information (go install …@v1.2.3, or the VCS
// pseudo-version go build stamps), if there is one.
var Version = "dev"

func init() { Version = resolveVersion(Version, debug.ReadBuildInfo) }

// resolveVersion is set, unless set is "dev" and the build information has a version.
func resolveVersion(set string, buildInfo func() (*debug.BuildInfo, bool)) string {
	if set != "dev" {
		return set
	}
	if info, ok := buildInfo(); ok && info.Main.Version != "" && info.Main.Version != "(devel)" {
		return info.Main.Version
	}
	return set
}
