// SPDX-License-Identifier: MIT OR Apache-2.0
pragma solidity 0.8.37;

/// Settles a swarm run's ledger. A submitter escrows a bounty for a run
/// (the run id is the BLAKE3 hash of its spec) and a payout per epoch; the
/// peers that did the epoch's work post its ledger root, signed by a quorum
/// of them; each peer then claims its share with a Merkle proof of its leaf.
///
/// Quorum for the root of epoch e (see the README, "Settlement"):
///  - more than 2/3 of the epoch's committee signs, where the committee is
///    the ascending list of settlement addresses with credits in the epoch
///    (its hash is part of what they sign), and
///  - for e > 0, more than half of the committee of epoch e - 1 is among the
///    signers (a group of fresh keys cannot post a root that lists only
///    itself: it needs the peers that were already trusted). Epoch 0 has no
///    earlier committee: its root is posted by the submitter, who vouches
///    for the first committee (anyone else could front-run it with a
///    committee of its own keys and, by continuity, hold every later epoch).
/// Roots are posted in epoch order, once each.
///
/// Leaves: keccak256(bytes.concat(keccak256(abi.encode(peer, payee, credits))))
/// with `peer` the swarm peer id (ed25519 public key), `payee` the address the
/// peer bound with its swarm key. Inner nodes hash the sorted pair.
contract SwarmSettlement {
    struct Task {
        address submitter;
        uint256 escrow;
        uint256 paid;
        uint256 payoutPerEpoch;
        uint64 epochs;
        uint64 nextEpoch;
    }

    struct Root {
        bytes32 root;
        uint256 totalCredits;
        uint256 paid;
    }

    mapping(bytes32 => Task) public tasks;
    mapping(bytes32 => mapping(uint64 => Root)) public roots;
    mapping(bytes32 => mapping(uint64 => mapping(address => bool))) public inCommittee;
    mapping(bytes32 => mapping(uint64 => uint256)) public committeeSize;
    mapping(bytes32 => mapping(uint64 => mapping(bytes32 => bool))) public claimed;

    event TaskRegistered(bytes32 indexed run, address submitter, uint256 escrow, uint256 payoutPerEpoch, uint64 epochs);
    event RootPosted(bytes32 indexed run, uint64 epoch, bytes32 root, uint256 totalCredits, uint256 signers);
    event Claimed(bytes32 indexed run, uint64 epoch, bytes32 peer, address payee, uint256 amount);

    error TaskExists();
    error BadTask();
    error UnknownTask();
    error WrongEpoch(uint64 expected);
    error NotSubmitter();
    error EmptyRoot();
    error CommitteeNotAscending();
    error SignersNotAscending();
    error BadSignature();
    error NotInCommittee(address signer);
    error NoQuorum(uint256 signers, uint256 needed);
    error NoContinuity(uint256 previous, uint256 needed);
    error UnknownEpoch();
    error AlreadyClaimed();
    error BadProof();
    error NoPayee();
    error BeyondEscrow();
    error TransferFailed();

    /// Escrows `msg.value` = `payoutPerEpoch * epochs` for run `run`.
    function register(bytes32 run, uint256 payoutPerEpoch, uint64 epochs) external payable {
        if (tasks[run].submitter != address(0)) revert TaskExists();
        if (payoutPerEpoch == 0 || epochs == 0 || msg.value != payoutPerEpoch * epochs) revert BadTask();
        tasks[run] = Task(msg.sender, msg.value, 0, payoutPerEpoch, epochs, 0);
        emit TaskRegistered(run, msg.sender, msg.value, payoutPerEpoch, epochs);
    }

    /// What each committee member signs (as a plain 32-byte digest).
    function rootDigest(bytes32 run, uint64 epoch, bytes32 root, uint256 totalCredits, address[] calldata committee)
        public
        pure
        returns (bytes32)
    {
        return keccak256(
            abi.encode("swarm ledger root", run, epoch, root, totalCredits, keccak256(abi.encodePacked(committee)))
        );
    }

    /// Posts the root of `epoch`; `sigs` are 65-byte (r, s, v) signatures of
    /// `rootDigest`, ordered by ascending signer address.
    function postRoot(
        bytes32 run,
        uint64 epoch,
        bytes32 root,
        uint256 totalCredits,
        address[] calldata committee,
        bytes[] calldata sigs
    ) external {
        Task storage t = tasks[run];
        if (t.submitter == address(0)) revert UnknownTask();
        if (epoch != t.nextEpoch || epoch >= t.epochs) revert WrongEpoch(t.nextEpoch);
        if (epoch == 0 && msg.sender != t.submitter) revert NotSubmitter();
        if (root == bytes32(0) || totalCredits == 0 || committee.length == 0) revert EmptyRoot();
        for (uint256 i = 1; i < committee.length; i++) {
            if (committee[i] <= committee[i - 1]) revert CommitteeNotAscending();
        }
        bytes32 digest = rootDigest(run, epoch, root, totalCredits, committee);
        uint256 previous = countSigners(run, epoch, digest, committee, sigs);
        if (sigs.length * 3 <= committee.length * 2) revert NoQuorum(sigs.length, committee.length * 2 / 3 + 1);
        if (epoch > 0) {
            uint256 before = committeeSize[run][epoch - 1];
            if (previous * 2 <= before) revert NoContinuity(previous, before / 2 + 1);
        }
        for (uint256 i = 0; i < committee.length; i++) {
            inCommittee[run][epoch][committee[i]] = true;
        }
        committeeSize[run][epoch] = committee.length;
        roots[run][epoch] = Root(root, totalCredits, 0);
        t.nextEpoch = epoch + 1;
        emit RootPosted(run, epoch, root, totalCredits, sigs.length);
    }

    /// Pays `payee` its share of `epoch`: payoutPerEpoch * credits / totalCredits.
    /// Anyone may send it; the money goes to the leaf's payee.
    function claim(bytes32 run, uint64 epoch, bytes32 peer, address payee, uint256 credits, bytes32[] calldata proof)
        external
    {
        Task storage t = tasks[run];
        if (t.submitter == address(0)) revert UnknownTask();
        Root storage r = roots[run][epoch];
        if (r.root == bytes32(0)) revert UnknownEpoch();
        if (claimed[run][epoch][peer]) revert AlreadyClaimed();
        // A peer that named no payee cannot be paid (its share stays in escrow).
        if (payee == address(0)) revert NoPayee();
        bytes32 node = keccak256(bytes.concat(keccak256(abi.encode(peer, payee, credits))));
        for (uint256 i = 0; i < proof.length; i++) {
            bytes32 p = proof[i];
            node = node < p ? keccak256(abi.encodePacked(node, p)) : keccak256(abi.encodePacked(p, node));
        }
        if (node != r.root) revert BadProof();
        uint256 amount = t.payoutPerEpoch * credits / r.totalCredits;
        if (r.paid + amount > t.payoutPerEpoch || t.paid + amount > t.escrow) revert BeyondEscrow();
        claimed[run][epoch][peer] = true;
        r.paid += amount;
        t.paid += amount;
        (bool ok,) = payee.call{value: amount}("");
        if (!ok) revert TransferFailed();
        emit Claimed(run, epoch, peer, payee, amount);
    }

    /// Checks that every signature is by a distinct committee member (in
    /// ascending order); returns how many were in the previous committee.
    function countSigners(
        bytes32 run,
        uint64 epoch,
        bytes32 digest,
        address[] calldata committee,
        bytes[] calldata sigs
    ) internal view returns (uint256 previous) {
        address last = address(0);
        uint256 j = 0;
        for (uint256 i = 0; i < sigs.length; i++) {
            address s = recover(digest, sigs[i]);
            if (s <= last) revert SignersNotAscending();
            last = s;
            // Both lists ascend: one pass finds every signer.
            while (j < committee.length && committee[j] < s) j++;
            if (j == committee.length || committee[j] != s) revert NotInCommittee(s);
            if (epoch > 0 && inCommittee[run][epoch - 1][s]) previous++;
        }
    }

    function recover(bytes32 digest, bytes calldata sig) internal pure returns (address) {
        if (sig.length != 65) revert BadSignature();
        bytes32 r = bytes32(sig[0:32]);
        bytes32 s = bytes32(sig[32:64]);
        uint8 v = uint8(sig[64]);
        if (v < 27) v += 27;
        // Only the lower half of s (no malleable twin of a signature).
        if (uint256(s) > 0x7FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF5D576E7357A4501DDFE92F46681B20A0) revert BadSignature();
        address a = ecrecover(digest, v, r, s);
        if (a == address(0)) revert BadSignature();
        return a;
    }
}
