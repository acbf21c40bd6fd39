//! A local anvil chain for tests and demos: started on 127.0.0.1 on a free
//! port, stopped when dropped. The binary is the one `scripts/setup.sh`
//! installs (`settlement/node_modules/.bin/anvil`), or `$ANVIL`.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

/// anvil's first ten accounts (its default mnemonic), each with 10 000 ETH.
pub const DEV_KEYS: [&str; 10] = [
    "ac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80",
    "59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d",
    "5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a",
    "7c852118294e51e653712a81e05800f419141751be58f605c371e15141b007a6",
    "47e179ec197488593b187f80a00eb0da91f1b9d0b13f8733639f19c30a34926a",
    "8b3a350cf5c34c9194ca85829a2df0ec3153be0318b5e2d3348e872092edffba",
    "92db14e403b83dfe3df233f83dfa3a0d7096f21ca9b0d6d6b8d88b2b4ec1564e",
    "4bbbf85ce3377467afe5d46f804f221813b2bb87f24d81f60f1fcdbf7cbf4356",
    "dbda1821b80551c9d65939329250298aa3472ba22feea921c0cf5d620ea67b97",
    "2a871d0798f97d79848a013d4936a73bf4cc922c825d33c1cf7073dff6d409c6",
];

/// A running anvil.
#[derive(Debug)]
pub struct Anvil {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
}

/// Where anvil is: `$ANVIL`, else the setup's npm install.
pub fn binary() -> PathBuf {
    if let Some(p) = std::env::var_os("ANVIL") {
        return PathBuf::from(p);
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("node_modules/.bin/anvil")
}

impl Anvil {
    /// Starts anvil and waits until it listens.
    pub fn start() -> std::io::Result<Anvil> {
        let bin = binary();
        let mut child = Command::new(&bin)
            .args(["--host", "127.0.0.1", "--port", "0", "--accounts", "10"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| std::io::Error::other(format!("{}: {e} (run scripts/setup.sh)", bin.display())))?;
        let out = child.stdout.take().expect("piped");
        let mut lines = BufReader::new(out).lines();
        let addr = loop {
            match lines.next() {
                Some(Ok(l)) => {
                    if let Some(a) = l.strip_prefix("Listening on ") {
                        break a.trim().to_string();
                    }
                }
                _ => {
                    let _ = child.kill();
                    return Err(std::io::Error::other("anvil exited before it listened"));
                }
            }
        };
        // Keep draining its output so it never blocks on a full pipe
        // (shown on stderr with ANVIL_LOG=1).
        let show = std::env::var_os("ANVIL_LOG").is_some();
        std::thread::spawn(move || {
            for l in lines.map_while(Result::ok) {
                if show {
                    eprintln!("anvil: {l}");
                }
            }
        });
        Ok(Anvil { child, url: format!("http://{addr}") })
    }
}

impl Drop for Anvil {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
