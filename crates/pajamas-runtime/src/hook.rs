//! Observation of the inputs of linear layers, for the importance matrix (imatrix).

/// What a [`LinearHook`] sees: the activations about to be multiplied by one weight
/// matrix.
#[derive(Debug, Clone, Copy)]
pub struct LinearInput<'a> {
    /// Decoder layer index; the output head reports `n_layers` (one past the last layer).
    pub layer: usize,
    /// Short name of the linear layer: `q_proj`, `k_proj`, `v_proj`, `o_proj`,
    /// `gate_proj`, `up_proj`, `down_proj`, `router`, Mamba-2's `in_proj` / `out_proj`
    /// or `lm_head`.
    pub name: &'static str,
    /// The weight's HF tensor name, e.g. `model.layers.3.mlp.down_proj.weight`
    /// (`model.embed_tokens.weight` for a tied head). One matrix of a stacked expert
    /// tensor is `name[E]` (Granite 4.0-H's `block_sparse_moe.input_linear.weight[3]`).
    pub tensor: &'a str,
    /// Row-major activations `[n_tokens x in_features]`.
    pub data: &'a [f32],
    pub n_tokens: usize,
    pub in_features: usize,
}

impl LinearInput<'_> {
    /// Activations of token `t`, `in_features` values.
    pub fn row(&self, t: usize) -> &[f32] {
        &self.data[t * self.in_features..(t + 1) * self.in_features]
    }
}

/// Called before every linear layer of the forward pass, in execution order. Projections
/// that share an input (q/k/v, gate/up) are each reported, with the same data.
pub trait LinearHook {
    fn before_linear(&mut self, input: &LinearInput<'_>);

    /// Called once per MoE block and batch with the routing decision: `routes` holds
    /// `top_k` `(expert, weight)` pairs per token, in token order (see
    /// [`crate::moe::route`]). For expert statistics; ignored by default.
    fn on_route(&mut self, _layer: usize, _n_experts: usize, _routes: &[crate::moe::Route]) {}
}

/// A hook that does nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoHook;

impl LinearHook for NoHook {
    fn before_linear(&mut self, _input: &LinearInput<'_>) {}
}

impl<F: FnMut(&LinearInput<'_>)> LinearHook for F {
    fn before_linear(&mut self, input: &LinearInput<'_>) {
        self(input)
    }
}
