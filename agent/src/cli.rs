//! Values of the `lastword` command line that clap checks before a command starts (`value_parser`): a
//! window of at least one report, addresses to listen on with a port that exists, collector URLs that
//! can work. A bad value is a usage error (exit 2) that names the flag and says what is wrong, before
//! anything is opened or bound.

/// `--window N`: how many reports may be unanswered at once; at least 1.
pub fn window(value: &str) -> Result<usize, String> {
    match value.trim().parse::<usize>() {
        Ok(0) => Err("the window must be at least 1: with 0 no report could ever be sent".into()),
        Ok(n) => Ok(n),
        Err(_) => Err("not a number of reports (e.g. 256)".into()),
    }
}

/// `HOST:PORT` to listen on (`--listen`, `--ui`): a host, and a port from 0 (any free port) to
/// 65535; an IPv6 address in brackets (`[::1]:8700`). Host names are resolved when binding.
pub fn listen_addr(value: &str) -> Result<String, String> {
    let example = "e.g. 127.0.0.1:8700, or port 0 for any free port";
    let Some((host, port)) = value.rsplit_once(':') else {
        return Err(format!("no port: write HOST:PORT, {example}"));
    };
    if host.is_empty() {
        return Err(format!("no host: write HOST:PORT, {example}"));
    }
    if host.contains(':') && !(host.starts_with('[') && host.ends_with(']')) {
        return Err(format!("write an IPv6 address in brackets: [{host}]:{port}"));
    }
    if port.parse::<u16>().is_err() {
        return Err(format!("the port {port:?} is not a number from 0 to 65535 ({example})"));
    }
    Ok(value.to_owned())
}

/// A collector URL (`--url`, `LASTWORD_URL`): what `lastword::init` accepts, checked the same way
/// ([`lastword::check_url`]), and trimmed as `init` trims the items of `LASTWORD_URL` (`a, b`).
pub fn collector_url(value: &str) -> Result<String, String> {
    let value = value.trim();
    lastword::check_url(value).map(|()| value.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_is_a_positive_number() {
        assert_eq!(window("1"), Ok(1));
        assert_eq!(window("256"), Ok(256));
        assert!(window("0").unwrap_err().contains("at least 1"));
        assert!(window("-1").unwrap_err().contains("not a number"));
        assert!(window("many").unwrap_err().contains("not a number"));
    }

    #[test]
    fn a_listen_address_has_a_host_and_a_port_that_exists() {
        for good in ["127.0.0.1:8700", "0.0.0.0:0", "localhost:65535", "[::1]:8701"] {
            assert_eq!(listen_addr(good).as_deref(), Ok(good));
        }
        for (bad, why) in [
            ("127.0.0.1:99999", "the port \"99999\" is not a number from 0 to 65535"),
            ("127.0.0.1:-1", "is not a number from 0 to 65535"),
            ("127.0.0.1:", "is not a number from 0 to 65535"),
            ("127.0.0.1", "no port"),
            (":8700", "no host"),
            ("::1:8700", "in brackets: [::1]:8700"),
        ] {
            let reason = listen_addr(bad).expect_err(bad);
            assert!(reason.contains(why), "{bad}: {reason}");
        }
    }

    #[test]
    fn a_collector_url_is_checked_as_init_checks_it() {
        assert_eq!(collector_url("ws://127.0.0.1:8700/ingest").as_deref(), Ok("ws://127.0.0.1:8700/ingest"));
        assert_eq!(
            collector_url(" ws://127.0.0.1:8700/ingest ").as_deref(),
            Ok("ws://127.0.0.1:8700/ingest")
        );
        assert!(collector_url("ws://127.0.0.1:99999/ingest").unwrap_err().contains("port"));
        assert!(collector_url("http://127.0.0.1:8700/ingest").unwrap_err().contains("ws://"));
    }
}
