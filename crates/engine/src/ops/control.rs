//! Control flow. `If` whose condition is known at plan time (a constant, or computed from
//! constants and inputs fixed at plan time) is replaced by the taken branch, lowered inline
//! node by node through the registry, its local names renamed `scope::name`. A condition
//! computed at run time is refused with what to do: both branches as sub-plans chosen at
//! run time need the sync points of the dynamic-shapes work.

use m2w_model::{AttrValue, NodeInfo};

use super::Registry;
use super::ctx::{Ctx, R, ins};

pub(super) fn register(r: &mut Registry) {
    r.op("If", 1, &["else_branch", "then_branch"], lower_if);
}

fn lower_if(cx: &mut Ctx, n: &NodeInfo) -> R<()> {
    let cond = ins(n)[0];
    let value = cx.konst(cond).ok_or_else(|| {
        format!(
            "its condition '{cond}' is computed at run time; m2w runs If when the condition is \
             known at plan time: fix the inputs it depends on (port --value NAME=V), or wait for \
             run-time branches (dynamic shapes)"
        )
    })?;
    let taken = value.as_f64().first().is_some_and(|&v| v != 0.0);
    let branch = if taken { "then_branch" } else { "else_branch" };
    let scope = match n.attributes.get(branch) {
        Some(AttrValue::Graph { scope }) => scope.clone(),
        _ => return Err(format!("no {branch} subgraph")),
    };
    let sub = cx
        .subgraphs
        .get(&scope)
        .cloned()
        .ok_or_else(|| format!("the {branch} subgraph ({scope}) was not read"))?;
    cx.open_branches.push((scope.clone(), sub.locals.clone()));
    let lowered = lower_branch(cx, &sub, branch);
    cx.open_branches.pop();
    lowered?;
    cx.open_branches.push((scope.clone(), sub.locals.clone()));
    let rename = renamer(cx);
    cx.open_branches.pop();
    if sub.outputs.len() < n.outputs.len() {
        return Err(format!("the {branch} has fewer outputs than the node"));
    }
    for (out, inner) in n.outputs.iter().zip(&sub.outputs) {
        if out.is_empty() {
            continue;
        }
        let inner = rename(inner);
        let shape = cx.shape(&inner)?;
        cx.view(out, &inner, shape)?;
        if let Some(d) = cx.declared(&inner) {
            cx.declare(out, d);
        }
    }
    Ok(())
}

/// Names as lowered inside the open branches: a branch's local name `x` is `scope::x`
/// (innermost branch first), anything else is an outer-graph name used as is.
fn renamer(cx: &Ctx) -> impl Fn(&String) -> String + use<> {
    let frames = cx.open_branches.clone();
    move |name: &String| {
        frames
            .iter()
            .rev()
            .find(|(_, locals)| locals.contains(name))
            .map(|(scope, _)| format!("{scope}::{name}"))
            .unwrap_or_else(|| name.clone())
    }
}

fn lower_branch(cx: &mut Ctx, sub: &super::Subgraph, branch: &str) -> R<()> {
    let rename = renamer(cx);
    for node in &sub.nodes {
        let mut inner = node.clone();
        inner.inputs = node.inputs.iter().map(&rename).collect();
        inner.outputs = node.outputs.iter().map(&rename).collect();
        let lowered = super::find(&inner.domain, &inner.op_type, cx.opset)
            .and_then(|spec| cx.lower(spec, &inner));
        lowered
            .map_err(|e| format!("in its {branch}, {} ({}): {e}", node.op_type, node.label()))?;
    }
    Ok(())
}
