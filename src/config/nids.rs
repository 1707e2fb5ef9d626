//! `[nids]`: intrusion detection with Suricata.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use portwarden_nids::{Engine, NidsOptions, Runmode, SuricataSettings};
use serde::{Deserialize, Serialize};

/// Who runs Suricata.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum SuricataMode {
    /// The agent starts and supervises Suricata.
    Managed,
    /// The user runs Suricata on the mirror interface; the agent reads its EVE.
    External,
}

/// `[nids]`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct NidsConfig {
    /// Detect at all. Default: on when there are rules, built-in or in
    /// `rules` (managed), or when `suricata = "external"`.
    pub enabled: Option<bool>,
    /// `managed` or `external`. Default: `managed`.
    pub suricata: SuricataMode,
    /// The Suricata executable (managed). Default: `suricata` on `PATH`.
    pub suricata_binary: PathBuf,
    /// The user's rules: a file, or a directory of `*.rules` (a mounted
    /// ConfigMap), loaded after the built-in ones. Default: `/etc/portwarden/rules`.
    pub rules: PathBuf,
    /// Load Portwarden's built-in rules. Default: `true`; `false` leaves
    /// only the user's.
    pub builtin_rules: bool,
    /// Where Suricata's config and logs (`suricata/`), the managed
    /// Suricata's EVE pipe and an external one's EVE socket live.
    /// Default: `/run/portwarden`.
    pub run_dir: PathBuf,
    /// External Suricata only: follow this EVE file instead of listening on
    /// `<run_dir>/eve.sock`. Default: none.
    pub eve_file: Option<PathBuf>,
    /// EVE types relayed besides alerts: any of `flow`, `dns`, `http`, `tls`.
    /// Default: none.
    pub events: Vec<String>,
    /// How long a released tag still names its last container (and is not
    /// reused). Default: `5m`.
    #[serde(with = "crate::duration")]
    pub tag_grace: Duration,
    /// Also send the mirrored traffic as VXLAN to a remote sensor at
    /// `host:port` (one VNI per capture). Default: none.
    /// Example: `vxlan = "10.0.0.5:4789"`.
    pub vxlan: Option<String>,
    /// Where the VNI → container map is kept (JSON) for the remote sensor.
    /// Default: `<run_dir>/vni-map.json` when `vxlan` is set.
    pub vni_map: Option<PathBuf>,
    /// Mirror into the local Suricata; `false` sends to the remote sensor only.
    /// Default: `true`.
    pub local: bool,
    /// Suricata's own default config, which the generated one starts from.
    /// Default: `/etc/suricata/suricata.yaml` (or under `/usr/local`) when present.
    pub suricata_config: Option<PathBuf>,
    /// Address groups (`HOME_NET`, `EXTERNAL_NET`, ...) set over Suricata's
    /// defaults. Example: `address_groups = { HOME_NET = "[10.0.0.0/8]" }`.
    pub address_groups: BTreeMap<String, String>,
    /// Port groups (`HTTP_PORTS`, ...) set over Suricata's defaults.
    pub port_groups: BTreeMap<String, String>,
    /// Suricata settings as `key=value`, passed as `--set` (they win over
    /// every file). Example: `["stream.midstream=true"]`.
    pub set: Vec<String>,
    /// A YAML file merged over the generated config (Suricata's `include`).
    pub include: Option<PathBuf>,
    /// `autofp` or `single`. Default: Suricata's (`autofp`).
    pub runmode: Option<Runmode>,
    /// Suricata's inspection threads (autofp). Default: Suricata's, one per CPU.
    pub threads: Option<u16>,
}

impl Default for NidsConfig {
    fn default() -> Self {
        Self {
            enabled: None,
            suricata: SuricataMode::Managed,
            suricata_binary: "suricata".into(),
            rules: "/etc/portwarden/rules".into(),
            builtin_rules: true,
            run_dir: "/run/portwarden".into(),
            eve_file: None,
            events: Vec::new(),
            tag_grace: Duration::from_secs(300),
            vxlan: None,
            vni_map: None,
            local: true,
            suricata_config: None,
            address_groups: BTreeMap::new(),
            port_groups: BTreeMap::new(),
            set: Vec::new(),
            include: None,
            runmode: None,
            threads: None,
        }
    }
}

impl NidsConfig {
    /// Rejects values that parse but cannot work; errors name the key.
    pub fn validate(&self) -> anyhow::Result<()> {
        for e in &self.events {
            anyhow::ensure!(
                ["flow", "dns", "http", "tls"].contains(&e.as_str()),
                "nids.events: `{e}` is not one of flow, dns, http, tls"
            );
        }
        if let Some(v) = &self.vxlan {
            v.parse::<SocketAddr>().map_err(|_| anyhow::anyhow!("nids.vxlan must be ip:port, got `{v}`"))?;
        }
        anyhow::ensure!(self.vxlan.is_some() || self.local, "nids.local = false needs nids.vxlan");
        self.settings().validate().map_err(anyhow::Error::msg)?;
        Ok(())
    }

    /// Whether detection runs.
    pub fn active(&self) -> bool {
        self.enabled.unwrap_or(match self.suricata {
            SuricataMode::External => true,
            SuricataMode::Managed => self.builtin_rules || self.user_rules() > 0,
        })
    }

    /// Rules in the `*.rules` files at `rules` (0 when missing, empty or
    /// unreadable): an empty mounted ConfigMap holds none.
    pub fn user_rules(&self) -> u64 {
        let files = portwarden_nids::rule_files(&self.rules).unwrap_or_default();
        files.iter().filter_map(|f| std::fs::read_to_string(f).ok()).map(|t| portwarden_nids::count_rules(&t)).sum()
    }

    /// Why detection is off, for the one message that says so.
    pub fn off_reason(&self) -> String {
        if self.enabled == Some(false) {
            "nids.enabled = false (or --no-detect, PORTWARDEN_NO_DETECT)".to_owned()
        } else {
            format!("built-in rules are off (nids.builtin_rules = false) and {} holds no rules", self.rules.display())
        }
    }

    /// Detection's options.
    pub fn options(&self) -> NidsOptions {
        let mut o = NidsOptions::managed(self.rules.clone(), self.run_dir.clone());
        o.engine = match self.suricata {
            SuricataMode::Managed => Engine::Managed,
            SuricataMode::External => Engine::External { eve_file: self.eve_file.clone() },
        };
        o.binary.clone_from(&self.suricata_binary);
        o.builtin_rules = self.builtin_rules;
        o.extra_types.clone_from(&self.events);
        o.tag_grace = self.tag_grace;
        o.vxlan = self.vxlan.as_deref().and_then(|v| v.parse().ok());
        o.vni_map = self.vni_map.clone().or_else(|| o.vxlan.map(|_| self.run_dir.join("vni-map.json")));
        o.local = self.local;
        o.settings = self.settings();
        o
    }

    fn settings(&self) -> SuricataSettings {
        SuricataSettings {
            defaults: self.suricata_config.clone(),
            address_groups: self.address_groups.clone(),
            port_groups: self.port_groups.clone(),
            set: self.set.clone(),
            include: self.include.clone(),
            runmode: self.runmode,
            threads: self.threads,
        }
    }
}
