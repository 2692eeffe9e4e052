package azure

import "strings"

// cloud is where an ACR's tokens come from.
type cloud struct {
	authority string
	// audience is the ACR resource; the scope asked of AAD is
	// audience + "/.default".
	audience string
}

// clouds maps registry.Registry.Partition for ACR hosts.
var clouds = map[string]cloud{
	"azure":         {"https://login.microsoftonline.com", "https://containerregistry.azure.net"},
	"azure-china":   {"https://login.chinacloudapi.cn", "https://containerregistry.azure.cn"},
	"azure-us-gov":  {"https://login.microsoftonline.us", "https://containerregistry.azure.us"},
	"azure-germany": {"https://login.microsoftonline.de", "https://containerregistry.azure.de"},
}

// cloudFor picks the partition's cloud (public for hosts without one),
// with the authority overridden by an option or AZURE_AUTHORITY_HOST.
func (p *Provider) cloudFor(partition string) cloud {
	c, ok := clouds[partition]
	if !ok {
		c = clouds["azure"]
	}
	if a := p.authority; a != "" {
		c.authority = a
	} else if a := p.getenv("AZURE_AUTHORITY_HOST"); a != "" {
		c.authority = a
	}
	c.authority = strings.TrimRight(c.authority, "/")
	return c
}
