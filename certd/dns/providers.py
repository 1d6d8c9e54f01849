"""The providers shipped with certd, registered by name."""

from certd.dns.base import register_builtin

register_builtin("rfc2136", "certd.dns.rfc2136:RFC2136Provider")
register_builtin("cloudflare", "certd.dns.cloudflare:CloudflareProvider")
register_builtin("route53", "certd.dns.route53:Route53Provider")
register_builtin("shell", "certd.dns.shell:ShellProvider")
register_builtin("digitalocean", "certd.dns.digitalocean:DigitalOceanProvider")
register_builtin("powerdns", "certd.dns.powerdns:PowerDNSProvider")
register_builtin("desec", "certd.dns.desec:DeSECProvider")
