//! The integration loops: fixed grid and adaptive, with save points and statistics.

use serde::{Deserialize, Serialize};

use crate::controller::{AdaptiveController, ControllerState, StepController};
use crate::field::{EndpointPolicy, StepInfo, VectorField};
use crate::grid::validate_times;
use crate::state::State;
use crate::tableau::{ButcherTableau, EndStageTime, Method};
use crate::{SolverError, TimeGrid};

/// Counters of one solve.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    /// Vector-field evaluations, including those answered with a zero velocity by
    /// [`EndpointPolicy::ZeroAtOrAfter`] (torchdiffeq + L2D count those too). Adaptive solves
    /// follow torchdiffeq's `2 + s·(accepted + rejected)` (`1 + …` with a given first step),
    /// with `s` = [`ButcherTableau::evals_per_step`].
    pub nfe: usize,
    /// Steps attempted (accepted + rejected).
    pub steps: usize,
    /// Accepted steps (every step of a fixed grid).
    pub accepted: usize,
    /// Rejected adaptive steps.
    pub rejected: usize,
    /// Evaluations answered with a zero velocity without calling the field.
    pub zero_velocity_evals: usize,
}

/// Which requested times are kept in the [`Solution`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum SaveAt {
    /// Every requested time, the first one (`y0`) included (torchdiffeq's output).
    #[default]
    All,
    /// Only the last requested time (saves memory when only the end state matters).
    Last,
}

/// The result of a solve: states at the saved times and the statistics.
#[derive(Debug, Clone)]
pub struct Solution<S> {
    /// The saved times.
    pub ts: Vec<f64>,
    /// The states at [`Solution::ts`].
    pub ys: Vec<S>,
    /// Evaluation and step counters.
    pub stats: Stats,
}

impl<S> Solution<S> {
    /// The state at the last saved time.
    pub fn last(&self) -> Option<&S> {
        self.ys.last()
    }

    /// The state at the last saved time, consuming the solution.
    pub fn into_last(self) -> Option<S> {
        self.ys.into_iter().last()
    }
}

/// A configured ODE solve: method × step controller × end-point policy × budgets × saving.
///
/// ```
/// use l2d_solvers::{Method, Solver, StepController};
///
/// // y' = -y from 0 to 1 with dopri5 at rtol = atol = 1e-8.
/// let solver = Solver::new(Method::Dopri5).with_controller(StepController::adaptive(1e-8, 1e-8));
/// let mut field = |_t: f64, y: &Vec<f64>| y.iter().map(|v| -v).collect::<Vec<f64>>();
/// let sol = solver.solve(&mut field, vec![1.0], &[0.0, 1.0])?;
/// assert!((sol.ys[1][0] - (-1.0f64).exp()).abs() < 1e-7);
/// assert_eq!(sol.stats.nfe, 2 + 6 * sol.stats.steps);
/// # Ok::<(), l2d_solvers::SolverError>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Solver {
    /// The Runge–Kutta method.
    pub method: Method,
    /// How steps are chosen.
    pub controller: StepController,
    /// What happens at a singular end point.
    pub endpoint: EndpointPolicy,
    /// Most steps (accepted + rejected) in the whole solve. torchdiffeq's `max_num_steps`
    /// counts per output interval instead.
    pub max_steps: Option<usize>,
    /// Most vector-field evaluations; a step that would exceed it is not started.
    pub max_nfe: Option<usize>,
    /// Which requested times are kept.
    pub save_at: SaveAt,
    /// Check every accepted state for NaN/∞ (one host read per step on a device); on by
    /// default.
    pub check_finite: bool,
}

impl Solver {
    /// A solver for `method` with its natural controller: one step per requested interval for
    /// fixed-grid methods, torchdiffeq's adaptive defaults (`rtol = 1e-7`, `atol = 1e-9`) for
    /// adaptive ones; no end-point policy, no budgets, all times saved.
    pub fn new(method: Method) -> Self {
        let controller = if method.is_adaptive() {
            StepController::Adaptive(AdaptiveController::default())
        } else {
            StepController::RequestedTimes
        };
        Solver {
            method,
            controller,
            endpoint: EndpointPolicy::Evaluate,
            max_steps: None,
            max_nfe: None,
            save_at: SaveAt::All,
            check_finite: true,
        }
    }

    /// Sets the step controller.
    pub fn with_controller(mut self, controller: StepController) -> Self {
        self.controller = controller;
        self
    }

    /// Adaptive control with torchdiffeq's defaults and these tolerances.
    pub fn with_tolerances(self, rtol: f64, atol: f64) -> Self {
        self.with_controller(StepController::adaptive(rtol, atol))
    }

    /// Sets the end-point policy.
    pub fn with_endpoint(mut self, endpoint: EndpointPolicy) -> Self {
        self.endpoint = endpoint;
        self
    }

    /// Sets the step budget.
    pub fn with_max_steps(mut self, max_steps: usize) -> Self {
        self.max_steps = Some(max_steps);
        self
    }

    /// Sets the evaluation budget.
    pub fn with_max_nfe(mut self, max_nfe: usize) -> Self {
        self.max_nfe = Some(max_nfe);
        self
    }

    /// Sets which times are saved.
    pub fn with_save_at(mut self, save_at: SaveAt) -> Self {
        self.save_at = save_at;
        self
    }

    /// Turns the per-step finiteness check on or off.
    pub fn with_check_finite(mut self, check: bool) -> Self {
        self.check_finite = check;
        self
    }

    /// Integrates `dx/dt = field(t, x)` from `times[0]` (where `x = y0`) through every time in
    /// `times` (strictly increasing or strictly decreasing, at least two points) and returns
    /// the states there (see [`SaveAt`]) with the statistics.
    ///
    /// # Shapes
    /// Every saved state has the shape of `y0`.
    ///
    /// # Errors
    /// Invalid times or options, a method without error estimate under an adaptive
    /// controller, step-size underflow, an exhausted budget, or a non-finite state (see
    /// [`SolverError`]).
    pub fn solve<S, F>(
        &self,
        field: &mut F,
        y0: S,
        times: &[f64],
    ) -> Result<Solution<S>, SolverError>
    where
        S: State,
        F: VectorField<S>,
    {
        let direction = validate_times("times", times)?;
        let mut ev = Evaluator {
            field,
            policy: self.endpoint,
            direction,
            stats: Stats::default(),
        };
        match &self.controller {
            StepController::RequestedTimes => self.fixed(&mut ev, y0, times, times, direction),
            StepController::Grid(grid) => {
                let g = grid.times()?;
                let (first, last) = (times[0], times[times.len() - 1]);
                if g[0] != first || g[g.len() - 1] != last {
                    return Err(SolverError::GridMismatch {
                        grid_start: g[0],
                        grid_end: g[g.len() - 1],
                        start: first,
                        end: last,
                    });
                }
                self.fixed(&mut ev, y0, &g, times, direction)
            }
            StepController::Adaptive(ctrl) => self.adaptive(&mut ev, y0, times, direction, ctrl),
        }
    }

    /// [`Solver::solve`] at the points of `grid`.
    ///
    /// # Errors
    /// As [`Solver::solve`], plus invalid grids (see [`TimeGrid::times`]).
    pub fn solve_grid<S, F>(
        &self,
        field: &mut F,
        y0: S,
        grid: &TimeGrid,
    ) -> Result<Solution<S>, SolverError>
    where
        S: State,
        F: VectorField<S>,
    {
        self.solve(field, y0, &grid.times()?)
    }

    fn check_budget(&self, stats: &Stats, needed: usize, t: f64) -> Result<(), SolverError> {
        if let Some(max_steps) = self.max_steps
            && stats.steps >= max_steps
        {
            return Err(SolverError::MaxStepsExceeded { max_steps, t });
        }
        self.check_nfe(stats, needed, t)
    }

    fn check_nfe(&self, stats: &Stats, needed: usize, t: f64) -> Result<(), SolverError> {
        if let Some(max_nfe) = self.max_nfe
            && stats.nfe + needed > max_nfe
        {
            return Err(SolverError::MaxNfeExceeded {
                max_nfe,
                nfe: stats.nfe,
                t,
            });
        }
        Ok(())
    }

    fn fixed<S, F>(
        &self,
        ev: &mut Evaluator<'_, F>,
        y0: S,
        grid: &[f64],
        times: &[f64],
        direction: f64,
    ) -> Result<Solution<S>, SolverError>
    where
        S: State,
        F: VectorField<S>,
    {
        let tab = self.method.tableau();
        if self.check_finite && !y0.is_finite() {
            return Err(SolverError::NonFiniteState {
                t: grid[0],
                step: 0,
            });
        }
        let mut out = Output::new(self.save_at, times.len());
        out.push(times[0], &y0);
        let mut j = 1;
        let mut y = y0;
        let mut f: Option<S> = None;
        for (i, w) in grid.windows(2).enumerate() {
            let (t0, t1) = (w[0], w[1]);
            let dt = t1 - t0;
            let needed = tab.stages() - usize::from(f.is_some());
            self.check_budget(&ev.stats, needed, t0)?;
            let step = rk_step(
                ev,
                tab,
                StageClock::Fixed,
                t0,
                dt,
                t1,
                &y,
                f.take(),
                i,
                false,
            );
            if self.check_finite && !step.y1.is_finite() {
                return Err(SolverError::NonFiniteState { t: t1, step: i });
            }
            ev.stats.steps += 1;
            ev.stats.accepted += 1;
            while j < times.len() && direction * (t1 - times[j]) >= 0.0 {
                let t = times[j];
                if out.wants(j) {
                    let yj = if t == t0 {
                        y.clone()
                    } else if t == t1 {
                        step.y1.clone()
                    } else {
                        let slope = (t - t0) / (t1 - t0);
                        let d = step.y1.lin_comb(&[(-1.0, &y)]);
                        y.lin_comb(&[(slope, &d)])
                    };
                    out.push(t, &yj);
                }
                j += 1;
            }
            let RkStep { y1, mut k, .. } = step;
            f = if tab.reuse_last_stage { k.pop() } else { None };
            y = y1;
        }
        Ok(out.finish(ev.stats))
    }

    fn adaptive<S, F>(
        &self,
        ev: &mut Evaluator<'_, F>,
        y0: S,
        times: &[f64],
        direction: f64,
        ctrl: &AdaptiveController,
    ) -> Result<Solution<S>, SolverError>
    where
        S: State,
        F: VectorField<S>,
    {
        ctrl.validate()?;
        let tab = self.method.tableau();
        if !tab.is_adaptive() {
            return Err(SolverError::NoErrorEstimate { method: tab.name });
        }
        let t_start = times[0];
        if !y0.is_finite() {
            return Err(SolverError::NonFiniteState {
                t: t_start,
                step: 0,
            });
        }
        let mut out = Output::new(self.save_at, times.len());
        out.push(t_start, &y0);

        self.check_nfe(&ev.stats, 1, t_start)?;
        let info = StepInfo {
            step_start: t_start,
            step_size: 0.0,
            stage: 0,
            step_index: 0,
        };
        let f0 = ev.eval(t_start, &y0, &info);
        let mut h_next = match ctrl.first_step {
            Some(h) => h,
            None => {
                self.check_nfe(&ev.stats, 1, t_start)?;
                select_initial_step(ev, t_start, &y0, &f0, tab.order, ctrl)
            }
        };

        let mut t = t_start;
        let mut y = y0;
        let mut f = Some(f0);
        let mut dense: Option<Dense<S>> = None;
        let mut cstate = ControllerState::new();
        let mut last_nonfinite: Option<(f64, usize)> = None;

        for (j, &next_t) in times.iter().enumerate().skip(1) {
            while direction * (next_t - t) > 0.0 {
                let step_index = ev.stats.steps;
                let needed = tab.stages() - usize::from(f.is_some());
                self.check_budget(&ev.stats, needed, t)?;
                let mut h = if h_next.is_finite() {
                    h_next
                } else {
                    ctrl.min_step
                };
                h = h.clamp(ctrl.min_step, ctrl.max_step);
                let dt = direction * h;
                let t1 = t + dt;
                if t1 == t || h == 0.0 {
                    return Err(match last_nonfinite {
                        Some((t, step)) => SolverError::NonFiniteState { t, step },
                        None => SolverError::StepSizeUnderflow {
                            t,
                            dt,
                            step: step_index,
                        },
                    });
                }
                let step = rk_step(
                    ev,
                    tab,
                    StageClock::Adaptive,
                    t,
                    dt,
                    t1,
                    &y,
                    f.take(),
                    step_index,
                    true,
                );
                let RkStep { y1, mut k, err } = step;
                let err = err.unwrap_or_else(|| y.zeros_like());
                let mut ratio = S::scaled_rms_norm(&err, &y, &y1, ctrl.atol, ctrl.rtol);
                let mut accepted = ctrl.accepts(h, ratio);
                if accepted && self.check_finite && !y1.is_finite() {
                    ratio = f64::NAN;
                    accepted = false;
                }
                if !ratio.is_finite() && h <= ctrl.min_step {
                    return Err(SolverError::NonFiniteState {
                        t: t1,
                        step: step_index,
                    });
                }
                ev.stats.steps += 1;
                if accepted {
                    ev.stats.accepted += 1;
                    last_nonfinite = None;
                    f = if tab.reuse_last_stage {
                        k.last().cloned()
                    } else {
                        None
                    };
                    let y_prev = std::mem::replace(&mut y, y1);
                    dense = Some(Dense {
                        t0: t,
                        t1,
                        dt,
                        y0: y_prev,
                        y1: y.clone(),
                        k,
                    });
                    t = t1;
                } else {
                    ev.stats.rejected += 1;
                    if !ratio.is_finite() {
                        last_nonfinite = Some((t1, step_index));
                    }
                    f = if k.is_empty() {
                        None
                    } else {
                        Some(k.swap_remove(0))
                    };
                }
                h_next = ctrl.next_step(h, ratio, accepted, tab.order, &mut cstate);
            }
            if out.wants(j) {
                let yj = match &dense {
                    Some(d) => d.evaluate(next_t, tab),
                    None => y.clone(),
                };
                out.push(next_t, &yj);
            }
        }
        Ok(out.finish(ev.stats))
    }
}

/// Saved outputs.
struct Output<S> {
    save_at: SaveAt,
    n: usize,
    ts: Vec<f64>,
    ys: Vec<S>,
}

impl<S: Clone> Output<S> {
    fn new(save_at: SaveAt, n: usize) -> Self {
        let cap = if save_at == SaveAt::All { n } else { 1 };
        Output {
            save_at,
            n,
            ts: Vec::with_capacity(cap),
            ys: Vec::with_capacity(cap),
        }
    }

    fn wants(&self, j: usize) -> bool {
        self.save_at == SaveAt::All || j + 1 == self.n
    }

    fn push(&mut self, t: f64, y: &S) {
        if self.save_at == SaveAt::All {
            self.ts.push(t);
            self.ys.push(y.clone());
        } else {
            self.ts = vec![t];
            self.ys = vec![y.clone()];
        }
    }

    fn finish(self, stats: Stats) -> Solution<S> {
        Solution {
            ts: self.ts,
            ys: self.ys,
            stats,
        }
    }
}

/// Calls the field, applies the end-point policy and counts.
pub(crate) struct Evaluator<'f, F> {
    pub(crate) field: &'f mut F,
    pub(crate) policy: EndpointPolicy,
    pub(crate) direction: f64,
    pub(crate) stats: Stats,
}

impl<F> Evaluator<'_, F> {
    pub(crate) fn eval<S>(&mut self, t: f64, x: &S, info: &StepInfo) -> S
    where
        S: State,
        F: VectorField<S>,
    {
        self.stats.nfe += 1;
        if self.policy.zeroes(t, self.direction) {
            self.stats.zero_velocity_evals += 1;
            x.zeros_like()
        } else {
            self.field.velocity(t, x, info)
        }
    }
}

/// How stage times with `c = 1` are computed.
#[derive(Clone, Copy, PartialEq, Eq)]
enum StageClock {
    /// The tableau's [`EndStageTime`].
    Fixed,
    /// The float just before `t1` (towards `t0`): torchdiffeq's `Perturb.PREV`.
    Adaptive,
}

struct RkStep<S> {
    y1: S,
    k: Vec<S>,
    err: Option<S>,
}

fn toward(t1: f64, t0: f64) -> f64 {
    if t1 > t0 {
        t1.next_down()
    } else {
        t1.next_up()
    }
}

/// One explicit RK step with torchdiffeq's arithmetic: stage inputs
/// `y0 + Σ (aᵢⱼ·dt)·kⱼ`, the solution is the last stage input for FSAL tableaux and
/// `y0 + Σ (dt·bᵢ)·kᵢ` otherwise, the error `Σ (dt·eᵢ)·kᵢ`.
#[allow(clippy::too_many_arguments)]
fn rk_step<S, F>(
    ev: &mut Evaluator<'_, F>,
    tab: &ButcherTableau,
    clock: StageClock,
    t0: f64,
    dt: f64,
    t1: f64,
    y0: &S,
    f0: Option<S>,
    step_index: usize,
    want_err: bool,
) -> RkStep<S>
where
    S: State,
    F: VectorField<S>,
{
    let s = tab.stages();
    let mut k: Vec<S> = Vec::with_capacity(s);
    let info = |stage| StepInfo {
        step_start: t0,
        step_size: dt,
        stage,
        step_index,
    };
    k.push(match f0 {
        Some(f) => f,
        None => ev.eval(t0, y0, &info(0)),
    });
    let fsal = tab.is_fsal();
    let mut last_input: Option<S> = None;
    for i in 1..s {
        let ci = tab.c[i];
        let ti = if ci == 1.0 {
            match clock {
                StageClock::Adaptive => toward(t1, t0),
                StageClock::Fixed => match tab.end_stage_time {
                    EndStageTime::T1 => t1,
                    EndStageTime::T0PlusDt => t0 + dt,
                },
            }
        } else {
            t0 + ci * dt
        };
        let terms: Vec<(f64, &S)> = tab.a[i - 1]
            .iter()
            .zip(k.iter())
            .filter(|(a, _)| **a != 0.0)
            .map(|(a, kj)| (a * dt, kj))
            .collect();
        let yi = y0.lin_comb(&terms);
        let ki = ev.eval(ti, &yi, &info(i));
        if fsal && i == s - 1 {
            last_input = Some(yi);
        }
        k.push(ki);
    }
    let y1 = match last_input {
        Some(y1) => y1,
        None => {
            let terms: Vec<(f64, &S)> = tab
                .b
                .iter()
                .zip(k.iter())
                .filter(|(b, _)| **b != 0.0)
                .map(|(b, kj)| (dt * b, kj))
                .collect();
            y0.lin_comb(&terms)
        }
    };
    let err = match (want_err, tab.b_error) {
        (true, Some(e)) => {
            let mut terms = e
                .iter()
                .zip(k.iter())
                .filter(|(e, _)| **e != 0.0)
                .map(|(e, kj)| (dt * e, kj));
            terms.next().map(|first| {
                let rest: Vec<(f64, &S)> = terms.collect();
                S::weighted_sum(first, &rest)
            })
        }
        _ => None,
    };
    RkStep { y1, k, err }
}

/// torchdiffeq's `_select_initial_step` (Hairer–Nørsett–Wanner I, §II.4) with exponent
/// `1/order`; one evaluation. Returns a step magnitude.
fn select_initial_step<S, F>(
    ev: &mut Evaluator<'_, F>,
    t0: f64,
    y0: &S,
    f0: &S,
    order: u32,
    ctrl: &AdaptiveController,
) -> f64
where
    S: State,
    F: VectorField<S>,
{
    let (atol, rtol) = (ctrl.atol, ctrl.rtol);
    let d0 = S::scaled_rms_norm(y0, y0, y0, atol, rtol).abs();
    let d1 = S::scaled_rms_norm(f0, y0, y0, atol, rtol).abs();
    let h0 = if d0 < 1e-5 || d1 < 1e-5 {
        1e-6
    } else {
        0.01 * d0 / d1
    }
    .abs();
    let y1 = y0.lin_comb(&[(h0, f0)]);
    let info = StepInfo {
        step_start: t0,
        step_size: ev.direction * h0,
        stage: 1,
        step_index: 0,
    };
    let f1 = ev.eval(t0 + ev.direction * h0, &y1, &info);
    let diff = f1.lin_comb(&[(-1.0, f0)]);
    let d2 = (S::scaled_rms_norm(&diff, y0, y0, atol, rtol) / h0).abs();
    let h1 = if d1 <= 1e-15 && d2 <= 1e-15 {
        (h0 * 1e-3).max(1e-6)
    } else {
        // Python's `max(d1, d2)`: d1 unless d2 > d1.
        let m = if d2 > d1 { d2 } else { d1 };
        (0.01 / m).powf(1.0 / f64::from(order))
    }
    .abs();
    (100.0 * h0).min(h1)
}

/// What torchdiffeq's 4th-order dense output needs from an accepted step.
struct Dense<S> {
    t0: f64,
    t1: f64,
    dt: f64,
    y0: S,
    y1: S,
    k: Vec<S>,
}

impl<S: State> Dense<S> {
    /// torchdiffeq's `_interp_fit` + `_interp_evaluate`: the quartic through `y0`, `y1`,
    /// `y_mid = y0 + Σ (dt·midᵢ)·kᵢ`, `f0 = k₀`, `f1 = k_last`, evaluated at `x = (t − t0)/(t1 − t0)`
    /// as one linear combination of those five states (its coefficients factored so that
    /// `x = 0` and `x = 1` give `y0` and `y1` exactly).
    fn evaluate(&self, t: f64, tab: &ButcherTableau) -> S {
        let x = (t - self.t0) / (self.t1 - self.t0);
        if x == 0.0 {
            return self.y0.clone();
        }
        if x == 1.0 {
            return self.y1.clone();
        }
        let mid = tab.b_mid.unwrap_or(tab.b);
        let mid_terms: Vec<(f64, &S)> = mid
            .iter()
            .zip(self.k.iter())
            .filter(|(m, _)| **m != 0.0)
            .map(|(m, kj)| (self.dt * m, kj))
            .collect();
        let y_mid = self.y0.lin_comb(&mid_terms);
        let (f0, f1) = (&self.k[0], &self.k[self.k.len() - 1]);
        let om = 1.0 - x;
        let x2 = x * x;
        let c_y0 = om * om * (1.0 + 2.0 * x - 8.0 * x2);
        let c_y1 = x2 * (2.0 * x - 1.0) * (5.0 - 4.0 * x);
        let c_mid = 16.0 * x2 * om * om;
        let c_f0 = self.dt * x * om * om * (1.0 - 2.0 * x);
        let c_f1 = self.dt * x2 * (x - 1.0) * (2.0 * x - 1.0);
        S::weighted_sum(
            (c_y0, &self.y0),
            &[(c_y1, &self.y1), (c_mid, &y_mid), (c_f0, f0), (c_f1, f1)],
        )
    }
}
