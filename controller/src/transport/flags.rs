//! Connection flags of both APIs (`--consul-*`, `--nomad-*`) and the one table of names, per API,
//! that the flags and the environment reader ([`ClientConfig::from_env`](super::ClientConfig::from_env)) share.

use std::fmt;
use std::marker::PhantomData;
use std::num::NonZeroU32;
use std::path::PathBuf;

use clap::builder::ValueParser;
use clap::{Arg, ArgAction, ArgMatches, Command, value_parser};

use super::{Api, CONSUL_DEFAULT_RATE, NOMAD_DEFAULT_RATE, Overrides};

/// One setting's names: this operator's flag (also the clap id) and the variable the API's
/// own CLI reads.
#[derive(Debug, Clone, Copy)]
pub(super) struct Name {
    pub(super) flag: &'static str,
    pub(super) env: &'static str,
}

/// The variable that turns certificate verification off, in the sense its API gives it.
#[derive(Debug, Clone, Copy)]
pub(super) enum VerifyVariable {
    /// True skips verification (`NOMAD_SKIP_VERIFY`).
    Skip(&'static str),
    /// False skips verification (`CONSUL_HTTP_SSL_VERIFY`).
    Verify(&'static str),
}

/// How one API's connection settings are named: the variables its own CLI reads and this
/// operator's flags. The environment reader and the flags of both APIs are one implementation
/// over this table, so Consul and Nomad differ only in their names.
#[derive(Debug)]
pub struct SettingNames {
    pub(super) api: Api,
    pub(super) default_addr: &'static str,
    pub(super) default_rate: NonZeroU32,
    /// Makes a bare `host:port` address https (Consul's `CONSUL_HTTP_SSL`).
    pub(super) https_env: Option<&'static str>,
    pub(super) addr: Name,
    pub(super) token_env: &'static str,
    pub(super) token_file_flag: &'static str,
    /// Nomad's CLI has no token-file variable.
    pub(super) token_file_env: Option<&'static str>,
    pub(super) ca_file: Name,
    pub(super) ca_path: Name,
    pub(super) client_cert: Name,
    pub(super) client_key: Name,
    pub(super) server_name: Name,
    pub(super) skip_verify_flag: &'static str,
    pub(super) skip_verify_env: VerifyVariable,
    pub(super) namespace: Name,
    /// What the namespace flag's help adds.
    pub(super) namespace_note: &'static str,
    /// Nomad only.
    pub(super) region: Option<Name>,
    pub(super) rate_limit_flag: &'static str,
}

const CONSUL: SettingNames = SettingNames {
    api: Api::Consul,
    default_addr: "127.0.0.1:8500",
    default_rate: CONSUL_DEFAULT_RATE,
    https_env: Some("CONSUL_HTTP_SSL"),
    addr: Name {
        flag: "consul-addr",
        env: "CONSUL_HTTP_ADDR",
    },
    token_env: "CONSUL_HTTP_TOKEN",
    token_file_flag: "consul-token-file",
    token_file_env: Some("CONSUL_HTTP_TOKEN_FILE"),
    ca_file: Name {
        flag: "consul-ca-cert",
        env: "CONSUL_CACERT",
    },
    ca_path: Name {
        flag: "consul-ca-path",
        env: "CONSUL_CAPATH",
    },
    client_cert: Name {
        flag: "consul-client-cert",
        env: "CONSUL_CLIENT_CERT",
    },
    client_key: Name {
        flag: "consul-client-key",
        env: "CONSUL_CLIENT_KEY",
    },
    server_name: Name {
        flag: "consul-tls-server-name",
        env: "CONSUL_TLS_SERVER_NAME",
    },
    skip_verify_flag: "consul-skip-verify",
    skip_verify_env: VerifyVariable::Verify("CONSUL_HTTP_SSL_VERIFY"),
    namespace: Name {
        flag: "consul-namespace",
        env: "CONSUL_NAMESPACE",
    },
    namespace_note: ". Consul Enterprise only: Consul CE refuses every request that names a namespace (400)",
    region: None,
    rate_limit_flag: "consul-rate-limit",
};

const NOMAD: SettingNames = SettingNames {
    api: Api::Nomad,
    default_addr: "127.0.0.1:4646",
    default_rate: NOMAD_DEFAULT_RATE,
    https_env: None,
    addr: Name {
        flag: "nomad-addr",
        env: "NOMAD_ADDR",
    },
    token_env: "NOMAD_TOKEN",
    token_file_flag: "nomad-token-file",
    token_file_env: None,
    ca_file: Name {
        flag: "nomad-ca-cert",
        env: "NOMAD_CACERT",
    },
    ca_path: Name {
        flag: "nomad-ca-path",
        env: "NOMAD_CAPATH",
    },
    client_cert: Name {
        flag: "nomad-client-cert",
        env: "NOMAD_CLIENT_CERT",
    },
    client_key: Name {
        flag: "nomad-client-key",
        env: "NOMAD_CLIENT_KEY",
    },
    server_name: Name {
        flag: "nomad-tls-server-name",
        env: "NOMAD_TLS_SERVER_NAME",
    },
    skip_verify_flag: "nomad-skip-verify",
    skip_verify_env: VerifyVariable::Skip("NOMAD_SKIP_VERIFY"),
    namespace: Name {
        flag: "nomad-namespace",
        env: "NOMAD_NAMESPACE",
    },
    namespace_note: "",
    region: Some(Name {
        flag: "nomad-region",
        env: "NOMAD_REGION",
    }),
    rate_limit_flag: "nomad-rate-limit",
};

impl SettingNames {
    /// The table of `api`.
    pub fn of(api: Api) -> &'static SettingNames {
        match api {
            Api::Consul => &CONSUL,
            Api::Nomad => &NOMAD,
        }
    }

    /// The variable holding the address (`CONSUL_HTTP_ADDR`, `NOMAD_ADDR`).
    pub fn addr_env(&self) -> &'static str {
        self.addr.env
    }

    /// The flag overriding the address, without its dashes (`consul-addr`, `nomad-addr`).
    pub fn addr_flag(&self) -> &'static str {
        self.addr.flag
    }

    /// Adds this API's connection flags to `cmd`, in the order `--help` lists them.
    fn augment(&self, cmd: Command) -> Command {
        let api = self.api;
        let overrides = |what: &str, env: &str| format!("{what} (overrides {env})");
        let named = |name: Name, value: &'static str, parser: ValueParser, what: &str| {
            option(name.flag, value, parser, overrides(what, name.env))
        };
        let path = |name, value, what: &str| named(name, value, ValueParser::path_buf(), what);
        let text = |name, value, what: &str| named(name, value, ValueParser::string(), what);
        let token_file_env = self.token_file_env.unwrap_or(self.token_env);
        let verify_env = match self.skip_verify_env {
            VerifyVariable::Skip(name) | VerifyVariable::Verify(name) => name,
        };
        let cmd = cmd
            .arg(text(self.addr, "ADDR", &format!("{api} address")))
            .arg(option(
                self.token_file_flag,
                "PATH",
                value_parser!(PathBuf),
                overrides(&format!("File holding the {api} ACL token"), token_file_env),
            ))
            .arg(path(self.ca_file, "PATH", "CA certificate file"))
            .arg(path(self.ca_path, "DIR", "Directory of CA certificates"))
            .arg(path(self.client_cert, "PATH", "Client certificate"))
            .arg(path(self.client_key, "PATH", "Client key"))
            .arg(text(self.server_name, "NAME", "Server name to verify"))
            .arg(
                Arg::new(self.skip_verify_flag)
                    .long(self.skip_verify_flag)
                    .action(ArgAction::SetTrue)
                    .help(overrides("Skip TLS verification", verify_env)),
            )
            .arg(option(
                self.namespace.flag,
                "NS",
                value_parser!(String),
                format!(
                    "{}{}",
                    overrides(&format!("{api} namespace"), self.namespace.env),
                    self.namespace_note
                ),
            ));
        let cmd = match self.region {
            Some(region) => cmd.arg(text(region, "REGION", &format!("{api} region"))),
            None => cmd,
        };
        cmd.arg(option(
            self.rate_limit_flag,
            "N",
            value_parser!(NonZeroU32),
            format!(
                "Requests per second to {api} (default {})",
                self.default_rate
            ),
        ))
    }
}

/// An optional flag taking one value.
fn option(
    flag: &'static str,
    value_name: &'static str,
    parser: impl clap::builder::IntoResettable<ValueParser>,
    help: String,
) -> Arg {
    Arg::new(flag)
        .long(flag)
        .value_name(value_name)
        .value_parser(parser)
        .action(ArgAction::Set)
        .help(help)
}

/// Which [`SettingNames`] a flag struct uses.
pub trait ApiNames: fmt::Debug + Clone + Default {
    /// The table.
    const NAMES: &'static SettingNames;
}

/// Names Consul's settings ([`ConsulFlags`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct ConsulNames;

impl ApiNames for ConsulNames {
    const NAMES: &'static SettingNames = &CONSUL;
}

/// Names Nomad's settings ([`NomadFlags`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct NomadNames;

impl ApiNames for NomadNames {
    const NAMES: &'static SettingNames = &NOMAD;
}

/// Consul connection flags, named like the `consul` CLI's (`--consul-addr`, …).
pub type ConsulFlags = ApiFlags<ConsulNames>;

/// Nomad connection flags, named like the `nomad` CLI's (`--nomad-addr`, …).
pub type NomadFlags = ApiFlags<NomadNames>;

/// Connection flags of one API, named by its table `N`. The token is taken from a file only: a
/// token on the command line would be visible to every user through the process list.
#[derive(Debug, Clone, Default)]
pub struct ApiFlags<N> {
    /// What the flags set, in the shape [`ClientConfig::apply`](super::ClientConfig::apply)
    /// takes; `token` stays `None`, since no flag carries one.
    pub overrides: Overrides,
    /// Which table names the flags; visible to the module's tests, which build flags in place.
    pub(super) names: PhantomData<N>,
}

impl<N: ApiNames> clap::Args for ApiFlags<N> {
    fn augment_args(cmd: Command) -> Command {
        N::NAMES.augment(cmd)
    }

    fn augment_args_for_update(cmd: Command) -> Command {
        N::NAMES.augment(cmd)
    }
}

impl<N: ApiNames> clap::FromArgMatches for ApiFlags<N> {
    fn from_arg_matches(matches: &ArgMatches) -> Result<Self, clap::Error> {
        let mut flags = ApiFlags::default();
        flags.update_from_arg_matches(matches)?;
        Ok(flags)
    }

    fn update_from_arg_matches(&mut self, matches: &ArgMatches) -> Result<(), clap::Error> {
        fn set<T: Clone + Send + Sync + 'static>(
            matches: &ArgMatches,
            flag: &str,
            field: &mut Option<T>,
        ) {
            if let Some(value) = matches.get_one::<T>(flag) {
                *field = Some(value.clone());
            }
        }
        let names = N::NAMES;
        let o = &mut self.overrides;
        set(matches, names.addr.flag, &mut o.addr);
        set(matches, names.token_file_flag, &mut o.token_file);
        set(matches, names.ca_file.flag, &mut o.ca_file);
        set(matches, names.ca_path.flag, &mut o.ca_path);
        set(matches, names.client_cert.flag, &mut o.client_cert);
        set(matches, names.client_key.flag, &mut o.client_key);
        set(matches, names.server_name.flag, &mut o.server_name);
        if matches.get_flag(names.skip_verify_flag) {
            o.skip_verify = Some(true);
        }
        set(matches, names.namespace.flag, &mut o.namespace);
        if let Some(region) = names.region {
            set(matches, region.flag, &mut o.region);
        }
        set(matches, names.rate_limit_flag, &mut o.rate_limit);
        Ok(())
    }
}

impl<N> From<ApiFlags<N>> for Overrides {
    fn from(f: ApiFlags<N>) -> Overrides {
        f.overrides
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)] // tests fail loudly
mod tests {
    use super::*;

    #[test]
    fn each_api_reads_its_own_flags_from_the_command_line() {
        use clap::Parser as _;
        #[derive(clap::Parser)]
        struct Both {
            #[command(flatten)]
            consul: ConsulFlags,
            #[command(flatten)]
            nomad: NomadFlags,
        }
        let both = Both::try_parse_from([
            "x",
            "--consul-addr=c:8500",
            "--consul-ca-cert=/c.pem",
            "--consul-skip-verify",
            "--nomad-addr=n:4646",
            "--nomad-region=eu",
            "--nomad-rate-limit=7",
        ])
        .unwrap();
        let (consul, nomad) = (both.consul.overrides, both.nomad.overrides);
        assert_eq!(consul.addr.as_deref(), Some("c:8500"));
        assert_eq!(consul.ca_file, Some(PathBuf::from("/c.pem")));
        assert_eq!(consul.skip_verify, Some(true));
        assert_eq!(consul.region, None);
        assert_eq!(nomad.addr.as_deref(), Some("n:4646"));
        assert_eq!(nomad.ca_file, None);
        assert_eq!(nomad.skip_verify, None);
        assert_eq!(nomad.region.as_deref(), Some("eu"));
        assert_eq!(nomad.rate_limit, NonZeroU32::new(7));
        assert!(Both::try_parse_from(["x", "--consul-region=eu"]).is_err());
    }
}
