//! placeholder
alloy::sol!(
    #[sol(rpc)]
    SwarmSettlement,
    "contract/out/SwarmSettlement.abi.json"
);
