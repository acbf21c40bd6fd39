compile_error!("gloo-timers placeholder: swarm does not build burn-remote or wasm targets");
