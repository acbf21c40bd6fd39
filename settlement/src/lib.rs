//! The optional settlement bridge of swarm: a run's ledger, settled on an
//! EVM contract (`contract/SwarmSettlement.sol`). A submitter escrows a
//! bounty for a run id; peers post each epoch's ledger root with a quorum of
//! the epoch's committee signatures that rode in their contributions, then
//! each claims its share with a Merkle proof. Every step is idempotent: it
//! reads the contract first and treats "already done" as done, so a retry
//! after a crash or a lost RPC reply neither pays twice nor fails.
//!
//! The contract's bytecode is `contract/out/SwarmSettlement.bin`, made by
//! `settlement/contract/build.sh` (solc 0.8.37 from the npm `solc`
//! package); a test compiles it again and compares.

use alloy::network::TransactionBuilder;
use alloy::primitives::{Address, B256, Bytes};
use alloy::providers::{DynProvider, Provider, ProviderBuilder};
use alloy::rpc::types::TransactionRequest;
use alloy::signers::local::PrivateKeySigner;
use protocol::ledger::{Epoch, Ledger};
use protocol::{Hash, PeerId};
use std::future::Future;
use std::time::Duration;

pub mod anvil;
mod settle;
pub use alloy::primitives::U256;
pub use settle::{Report, settle};

alloy::sol!(
    #[sol(rpc)]
    #[derive(Debug)]
    SwarmSettlement,
    "contract/out/SwarmSettlement.abi.json"
);

use SwarmSettlement::SwarmSettlementErrors as Refusal;

/// The contract's creation code (hex), as solc made it.
pub const BYTECODE_HEX: &str = include_str!("../contract/out/SwarmSettlement.bin");

/// Errors of the bridge.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A key that is not a secp256k1 secret.
    #[error("settlement key: {0}")]
    BadKey(String),
    /// An address or URL that cannot be used.
    #[error("bad {what} `{value}`")]
    Bad {
        /// What it is.
        what: &'static str,
        /// As given.
        value: String,
    },
    /// The endpoint did not answer in time.
    #[error("the RPC endpoint did not answer within {0:?}")]
    Timeout(Duration),
    /// The endpoint answered with an error or with something that is not a
    /// JSON-RPC reply.
    #[error("RPC: {0}")]
    Rpc(String),
    /// The contract refused the call (its custom error).
    #[error("the contract refused: {0}")]
    Refused(String),
    /// No task is registered for the run.
    #[error("no task is registered for run {0} on this contract")]
    UnknownTask(String),
    /// Deployment did not give a contract.
    #[error("deployment failed: {0}")]
    Deploy(String),
}

/// A run's task as the contract holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Task {
    /// Who escrowed the bounty.
    pub submitter: Address,
    /// The escrow.
    pub escrow: U256,
    /// Paid out so far.
    pub paid: U256,
    /// The payout of one epoch.
    pub payout_per_epoch: U256,
    /// Epochs paid for.
    pub epochs: u64,
    /// The next epoch whose root may be posted.
    pub next_epoch: u64,
}

/// What a sent transaction did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Mined: its hash and gas.
    Done {
        /// The transaction.
        tx: B256,
        /// Gas used.
        gas: u64,
    },
    /// The contract already holds what the call would have done.
    AlreadyDone,
}

/// A connection to the contract with a key that pays for gas.
#[derive(Clone, Debug)]
pub struct Chain {
    provider: DynProvider,
    contract: SwarmSettlement::SwarmSettlementInstance<DynProvider>,
    from: Address,
    timeout: Duration,
}

fn signer(key_hex: &str) -> Result<PrivateKeySigner, Error> {
    let t = key_hex.trim();
    t.strip_prefix("0x").unwrap_or(t).parse().map_err(|e| Error::BadKey(format!("{e}")))
}

/// reqwest (alloy's HTTP client) is built with rustls but without a default
/// crypto provider when iroh is in the same build (the swarm's data plane
/// enables that feature), and then panics building its first client, even
/// for a plain-http RPC: install ring's once, first.
fn install_crypto() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

fn provider(rpc: &str, key_hex: &str) -> Result<(DynProvider, Address), Error> {
    install_crypto();
    let url = rpc.parse().map_err(|_| Error::Bad { what: "RPC URL", value: rpc.to_string() })?;
    let s = signer(key_hex)?;
    let from = s.address();
    // The nonce is read from the chain for every transaction: a cached one
    // is taken by a send that the contract then refuses at estimation, and
    // every later transaction waits behind the gap.
    let p = ProviderBuilder::new()
        .disable_recommended_fillers()
        .with_gas_estimation()
        .with_simple_nonce_management()
        .fetch_chain_id()
        .wallet(s)
        .connect_http(url)
        .erased();
    Ok((p, from))
}

/// Parses `0x` + 40 hex characters.
pub fn parse_address(s: &str) -> Result<Address, Error> {
    s.trim().parse().map_err(|_| Error::Bad { what: "address", value: s.to_string() })
}

fn contract_error(e: alloy::contract::Error) -> Error {
    if let Some(r) = e.as_decoded_interface_error::<Refusal>() {
        return Error::Refused(format!("{r:?}"));
    }
    Error::Rpc(e.to_string())
}

async fn within<T, E, F>(timeout: Duration, f: F, map: impl FnOnce(E) -> Error) -> Result<T, Error>
where
    F: std::future::IntoFuture<Output = Result<T, E>>,
{
    match tokio::time::timeout(timeout, f.into_future()).await {
        Err(_) => Err(Error::Timeout(timeout)),
        Ok(r) => r.map_err(map),
    }
}

/// Polls for a sent transaction's receipt (every 100 ms, up to `timeout`).
async fn receipt_of(
    provider: &DynProvider,
    tx: B256,
    timeout: Duration,
) -> Result<alloy::rpc::types::TransactionReceipt, Error> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if let Some(r) = within(left, provider.get_transaction_receipt(tx), |e| Error::Rpc(e.to_string())).await? {
            return Ok(r);
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(Error::Timeout(timeout));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Deploys the contract with `key_hex` paying; returns its address.
pub async fn deploy(rpc: &str, key_hex: &str, timeout: Duration) -> Result<Address, Error> {
    let (provider, _) = provider(rpc, key_hex)?;
    let code = hex::decode(BYTECODE_HEX.trim()).map_err(|e| Error::Deploy(e.to_string()))?;
    let tx = TransactionRequest::default().with_deploy_code(Bytes::from(code));
    let pending = within(timeout, provider.send_transaction(tx), |e| Error::Rpc(e.to_string())).await?;
    let receipt = receipt_of(&provider, *pending.tx_hash(), timeout).await?;
    receipt.contract_address.ok_or_else(|| Error::Deploy("no contract address in the receipt".into()))
}

impl Chain {
    /// A connection to the contract at `contract`, sending with `key_hex`;
    /// every RPC call gives up after `timeout`.
    pub fn connect(rpc: &str, contract: Address, key_hex: &str, timeout: Duration) -> Result<Chain, Error> {
        let (provider, from) = provider(rpc, key_hex)?;
        let contract = SwarmSettlement::new(contract, provider.clone());
        Ok(Chain { provider, contract, from, timeout })
    }

    /// The address that pays for gas.
    pub fn sender(&self) -> Address {
        self.from
    }

    /// The balance of `a`, in wei.
    pub async fn balance(&self, a: Address) -> Result<U256, Error> {
        within(self.timeout, self.provider.get_balance(a), |e| Error::Rpc(e.to_string())).await
    }

    async fn send<F, Fut>(&self, call: F) -> Result<Outcome, Error>
    where
        F: FnOnce() -> Fut,
        Fut: Future<
            Output = Result<
                alloy::providers::PendingTransactionBuilder<alloy::network::Ethereum>,
                alloy::contract::Error,
            >,
        >,
    {
        let pending = within(self.timeout, call(), contract_error).await?;
        let receipt = receipt_of(&self.provider, *pending.tx_hash(), self.timeout).await?;
        if !receipt.status() {
            return Err(Error::Refused(format!("transaction {} reverted", receipt.transaction_hash)));
        }
        Ok(Outcome::Done { tx: receipt.transaction_hash, gas: receipt.gas_used })
    }

    /// Escrows `per_epoch * epochs` wei for run `run`.
    pub async fn register(&self, run: &Hash, per_epoch: U256, epochs: u64) -> Result<Outcome, Error> {
        if let Some(t) = self.task(run).await? {
            // Ours, as asked: a retry after a lost reply. Anyone else's (a run
            // id is public, and tasks are keyed by it alone): say so.
            let want = per_epoch.checked_mul(U256::from(epochs));
            if t.submitter == self.from && t.payout_per_epoch == per_epoch && Some(t.escrow) == want {
                return Ok(Outcome::AlreadyDone);
            }
            return Err(Error::Refused(format!(
                "TaskExists: run {} is already registered by {} ({} wei per epoch for {} epochs)",
                run.short(),
                t.submitter,
                t.payout_per_epoch,
                t.epochs
            )));
        }
        let value =
            per_epoch.checked_mul(U256::from(epochs)).ok_or(Error::Bad { what: "bounty", value: "overflow".into() })?;
        let c = &self.contract;
        self.send(|| async move { c.register(B256::from(run.0), per_epoch, epochs).value(value).send().await }).await
    }

    /// The task of run `run`, if one is registered.
    pub async fn task(&self, run: &Hash) -> Result<Option<Task>, Error> {
        let t = within(self.timeout, self.contract.tasks(B256::from(run.0)).call(), contract_error).await?;
        if t.submitter == Address::ZERO {
            return Ok(None);
        }
        Ok(Some(Task {
            submitter: t.submitter,
            escrow: t.escrow,
            paid: t.paid,
            payout_per_epoch: t.payoutPerEpoch,
            epochs: t.epochs,
            next_epoch: t.nextEpoch,
        }))
    }

    /// The root posted for an epoch, if any.
    pub async fn root(&self, run: &Hash, epoch: u64) -> Result<Option<(B256, U256)>, Error> {
        let r = within(self.timeout, self.contract.roots(B256::from(run.0), epoch).call(), contract_error).await?;
        Ok((r.root != B256::ZERO).then_some((r.root, r.totalCredits)))
    }

    /// Whether `peer` claimed its share of `epoch`.
    pub async fn claimed(&self, run: &Hash, epoch: u64, peer: &PeerId) -> Result<bool, Error> {
        let c = self.contract.claimed(B256::from(run.0), epoch, B256::from(peer.0));
        within(self.timeout, c.call(), contract_error).await
    }

    /// The digest the contract has the committee sign (to check ours).
    pub async fn digest(&self, run: &Hash, e: &Epoch) -> Result<B256, Error> {
        let committee: Vec<Address> = e.committee.iter().map(|a| Address::from(*a)).collect();
        let c =
            self.contract.rootDigest(B256::from(run.0), e.epoch, B256::from(e.root), U256::from(e.total), committee);
        within(self.timeout, c.call(), contract_error).await
    }

    /// Posts `e`'s root with signatures (65 bytes each, by ascending signer).
    pub async fn post_root(&self, run: &Hash, e: &Epoch, sigs: Vec<Bytes>) -> Result<Outcome, Error> {
        if self.root(run, e.epoch).await?.is_some() {
            return Ok(Outcome::AlreadyDone);
        }
        let committee: Vec<Address> = e.committee.iter().map(|a| Address::from(*a)).collect();
        let c = &self.contract;
        let call = c.postRoot(B256::from(run.0), e.epoch, B256::from(e.root), U256::from(e.total), committee, sigs);
        match self.send(|| async move { call.send().await }).await {
            // Someone posted it between our read and our send.
            Err(Error::Refused(r)) if r.starts_with("WrongEpoch") && self.root(run, e.epoch).await?.is_some() => {
                Ok(Outcome::AlreadyDone)
            }
            other => other,
        }
    }

    /// Claims `peer`'s share of `e` (paid to the payee in its leaf).
    pub async fn claim(&self, run: &Hash, e: &Epoch, peer: &PeerId) -> Result<Outcome, Error> {
        if self.claimed(run, e.epoch, peer).await? {
            return Ok(Outcome::AlreadyDone);
        }
        let Some(c) = e.credits.iter().find(|c| c.peer == *peer && c.credits > 0) else {
            return Err(Error::Refused(format!("no credits in epoch {}", e.epoch)));
        };
        let proof: Vec<B256> = e.proof(peer).unwrap_or_default().into_iter().map(B256::from).collect();
        let payee = Address::from(c.payee.unwrap_or([0; 20]));
        let k = &self.contract;
        let call = k.claim(B256::from(run.0), e.epoch, B256::from(peer.0), payee, U256::from(c.credits), proof);
        match self.send(|| async move { call.send().await }).await {
            Err(Error::Refused(r)) if r.starts_with("AlreadyClaimed") => Ok(Outcome::AlreadyDone),
            other => other,
        }
    }

    /// Sends a claim with arbitrary fields (for tests of what the contract refuses).
    pub async fn claim_raw(
        &self,
        run: &Hash,
        epoch: u64,
        peer: &PeerId,
        payee: Address,
        credits: u64,
        proof: Vec<[u8; 32]>,
    ) -> Result<Outcome, Error> {
        let proof: Vec<B256> = proof.into_iter().map(B256::from).collect();
        let k = &self.contract;
        let call = k.claim(B256::from(run.0), epoch, B256::from(peer.0), payee, U256::from(credits), proof);
        self.send(|| async move { call.send().await }).await
    }

    /// Posts a root with arbitrary fields (for tests of what the contract refuses).
    pub async fn post_raw(
        &self,
        run: &Hash,
        e: &Epoch,
        committee: Vec<Address>,
        sigs: Vec<Bytes>,
    ) -> Result<Outcome, Error> {
        let c = &self.contract;
        let call = c.postRoot(B256::from(run.0), e.epoch, B256::from(e.root), U256::from(e.total), committee, sigs);
        self.send(|| async move { call.send().await }).await
    }
}

/// The signatures of `e`'s digest that recover to the committee member
/// they were announced for, one per signer, ordered by ascending signer (as
/// the contract wants them), each re-encoded as the contract checks it
/// (low s, v = 27 or 28): one odd encoding must not block every post.
pub fn quorum_signatures(run: &Hash, e: &Epoch) -> Vec<Bytes> {
    let digest = B256::from(e.digest(run));
    let mut by_signer: Vec<(Address, Bytes)> = e
        .attestations
        .iter()
        .filter_map(|(payee, sig)| {
            let s = alloy::primitives::Signature::try_from(&sig.0[..]).ok()?;
            let s = s.normalize_s().unwrap_or(s);
            let a = s.recover_address_from_prehash(&digest).ok()?;
            (a.0.0 == *payee && e.committee.contains(payee)).then(|| (a, Bytes::from(s.as_bytes().to_vec())))
        })
        .collect();
    by_signer.sort_by_key(|(a, _)| *a);
    by_signer.dedup_by_key(|(a, _)| *a);
    by_signer.into_iter().map(|(_, s)| s).collect()
}

/// Whether `signatures` of a committee of `committee` members make a quorum
/// (more than two thirds).
pub fn is_quorum(signatures: usize, committee: usize) -> bool {
    signatures * 3 > committee * 2
}

/// Reads the ledger a node keeps; re-exported for the `swarm settle` command.
pub fn epochs_to_settle(ledger: &Ledger) -> Vec<&Epoch> {
    ledger.epochs().filter(|e| !e.is_unknown()).collect()
}
