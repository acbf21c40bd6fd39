//! The EVM side of the ledger: keccak256, the leaf and pair hashing of the
//! settlement contract's Merkle proofs, and the digest committee members
//! sign, each byte for byte as Solidity's `abi.encode` makes it.

use crate::id::{Hash, PeerId};
use crate::message::Address;
use sha3::{Digest, Keccak256};

/// keccak256.
pub fn keccak(parts: &[&[u8]]) -> [u8; 32] {
    let mut k = Keccak256::new();
    for p in parts {
        k.update(p);
    }
    k.finalize().into()
}

fn word_u64(x: u64) -> [u8; 32] {
    let mut w = [0; 32];
    w[24..].copy_from_slice(&x.to_be_bytes());
    w
}

fn word_address(a: &Address) -> [u8; 32] {
    let mut w = [0; 32];
    w[12..].copy_from_slice(a);
    w
}

/// A leaf: keccak256(keccak256(abi.encode(bytes32 peer, address payee, uint256 credits))).
pub fn leaf(peer: &PeerId, payee: &Address, credits: u64) -> [u8; 32] {
    let inner = keccak(&[&peer.0, &word_address(payee), &word_u64(credits)]);
    keccak(&[&inner])
}

fn pair(a: &[u8; 32], b: &[u8; 32]) -> [u8; 32] {
    if a < b { keccak(&[a, b]) } else { keccak(&[b, a]) }
}

/// The root of hashed leaves: sorted pairs, an odd last node goes up as is.
/// An empty tree's root is keccak256 of nothing.
pub fn merkle_root(leaves: &[[u8; 32]]) -> [u8; 32] {
    if leaves.is_empty() {
        return keccak(&[]);
    }
    let mut level = leaves.to_vec();
    while level.len() > 1 {
        level = level.chunks(2).map(|c| if c.len() == 2 { pair(&c[0], &c[1]) } else { c[0] }).collect();
    }
    level[0]
}

/// The siblings from leaf `i` up to the root.
pub fn merkle_proof(leaves: &[[u8; 32]], mut i: usize) -> Vec<[u8; 32]> {
    let mut proof = Vec::new();
    let mut level = leaves.to_vec();
    while level.len() > 1 {
        let sibling = i ^ 1;
        if sibling < level.len() {
            proof.push(level[sibling]);
        }
        level = level.chunks(2).map(|c| if c.len() == 2 { pair(&c[0], &c[1]) } else { c[0] }).collect();
        i /= 2;
    }
    proof
}

/// Folds a proof as the contract does.
pub fn verify_proof(leaf: [u8; 32], proof: &[[u8; 32]], root: &[u8; 32]) -> bool {
    proof.iter().fold(leaf, |n, p| pair(&n, p)) == *root
}

/// What committee members sign: keccak256(abi.encode("swarm ledger root",
/// run, epoch, root, total, keccak256(abi.encodePacked(committee)))).
/// (`abi.encodePacked` pads the elements of an array to 32 bytes.)
pub fn root_digest(run: &Hash, epoch: u64, root: &[u8; 32], total: u64, committee: &[Address]) -> [u8; 32] {
    let packed: Vec<u8> = committee.iter().flat_map(word_address).collect();
    let committee_hash = keccak(&[&packed]);
    let tag = b"swarm ledger root";
    let mut tag_word = [0u8; 32];
    tag_word[..tag.len()].copy_from_slice(tag);
    keccak(&[
        &word_u64(6 * 32), // offset of the string
        &run.0,
        &word_u64(epoch),
        root,
        &word_u64(total),
        &committee_hash,
        &word_u64(tag.len() as u64),
        &tag_word,
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_leaf_proves_against_the_root() {
        for n in 1..12usize {
            let leaves: Vec<[u8; 32]> = (0..n).map(|i| leaf(&PeerId([i as u8; 32]), &[1; 20], i as u64 + 1)).collect();
            let root = merkle_root(&leaves);
            for (i, l) in leaves.iter().enumerate() {
                assert!(verify_proof(*l, &merkle_proof(&leaves, i), &root), "n {n} leaf {i}");
                let other = leaf(&PeerId([i as u8; 32]), &[2; 20], i as u64 + 1);
                assert!(!verify_proof(other, &merkle_proof(&leaves, i), &root), "n {n} leaf {i}");
            }
        }
    }

    #[test]
    fn keccak_is_the_evm_one() {
        // keccak256("") as every EVM tool prints it.
        assert_eq!(hex::encode(keccak(&[])), "c5d2460186f7233c927e7db2dcc703c0e500b653ca82273b7bfad8045d85a470");
    }
}
