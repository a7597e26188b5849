"""Bridge between torch and the Newton physics engine for the SHAC locomotion tasks (Ant, Hopper).

:class:`NewtonArticulation` builds ``N`` copies of one MJCF articulation on a ground plane and
advances them by one control step (``dt``, ``substeps`` integration substeps) from torch tensors:
the solver's state and the joint forces in, the next state and the joint coordinates and
velocities out. The step is a :class:`torch.autograd.Function` (:class:`_NewtonStep`): the
forward pass records the substeps on a ``warp.Tape``; the backward pass (repeatable, as with
``retain_graph``) feeds the incoming torch gradients into the tape and returns the gradients with
respect to the state and the forces. A world whose backward gradient holds a NaN or inf gets a
zero gradient instead, and is counted in :attr:`NewtonArticulation.nonfinite_gradient_worlds`
(never propagated silently).

The physical parameters follow the benchmark's dflex loader (SHAC, Xu et al. 2022), which the
engines model differently in three places; :class:`ArticulationPhysics` states how they map:

* dflex damps every non-free joint with its ``limit_kd`` at all times (on top of the joint's own
  ``damping``) and adds no extra damping when a limit is violated; here that viscous term is put
  in ``Model.joint_damping`` and Newton's violation-only ``joint_limit_kd`` is set to 0.
* dflex adds ``armature`` to the diagonal of every degree of freedom's generalized mass (the free
  root's included). :class:`~newton.solvers.SolverFeatherstone` does the same. Newton's
  semi-implicit solver works on bodies and ignores joint armature, so for it the armature is
  added to the rotational inertia (``armature * I``, kg m^2) of the child body of every joint
  with rotational degrees of freedom, and not at all to sliding ones (an approximation). On the
  Ant this extra inertia is also what keeps the light leg bodies stable at 16 substeps: without
  it the unactuated Ant's hinges spin through their limits within a second.
* dflex integrated in joint coordinates, so its joints were exact; Newton's semi-implicit solver
  holds bodies together with penalty springs (``joint_attach_ke``, ``joint_attach_kd``), set per
  robot. They give under load (the 182 kg Ant: about 1.5 cm per joint), so the semi-implicit
  Ant stands 3-4 cm lower and, without actions, sinks sooner than on Featherstone (see
  :mod:`~difftraffic_rl.tasks.physics.ant`).

Joint limits act as in dflex: beyond ``[lower, upper]`` a spring of stiffness ``limit_ke``
pushes back (no other limit force). MJCF ranges are read in the file's ``angle`` unit (the
assets say which) and stored in radians.

Engine dependency: ``newton`` and ``warp`` are imported when a model is built, not when this
module is imported, so ``import difftraffic_rl`` works without them (install the
``difftraffic[physics]`` extra to use these tasks).

Shapes: ``N`` worlds, ``C`` joint coordinates and ``D`` degrees of freedom per world, ``P`` and
``V`` the sizes of the solver's position and velocity state per world.
"""

from __future__ import annotations

import weakref
from contextlib import nullcontext
from dataclasses import dataclass, fields
from importlib import resources
from typing import Any

import torch

from difftraffic_rl.envs import check_physical_parameters

__all__ = [
    "SOLVERS",
    "ArticulationPhysics",
    "NewtonArticulation",
    "import_newton",
]

SOLVERS = ("semi_implicit", "featherstone")
"""Valid ``solver`` values: Newton's ``SolverSemiImplicit`` (default) or ``SolverFeatherstone``."""


def import_newton() -> tuple[Any, Any]:
    """The ``(warp, newton)`` modules; ``ImportError`` saying how to install them if missing."""
    try:
        import warp as wp

        wp.config.quiet = True  # type: ignore[attr-defined]  # set at runtime, absent from stubs
        import newton

        wp.init()
    except ImportError as error:
        raise ImportError(
            "the Ant and Hopper tasks need the Newton physics engine; install it with "
            "pip install 'difftraffic[physics]' (newton and warp-lang at the tested versions)"
        ) from error
    return wp, newton


@dataclass(frozen=True)
class ArticulationPhysics:
    """Physical and integration parameters of one articulated robot, as the benchmark sets them.

    Attributes:
        asset: MJCF file name in ``difftraffic_rl/tasks/physics/assets`` (geometry, joint axes
            and ranges only).
        density: density of every shape (kg/m^3, > 0); masses and inertias follow from it.
        contact_ke: ground contact normal stiffness (N/m, > 0).
        contact_kd: ground contact normal damping (N s/m, >= 0).
        contact_kf: friction regularization slope (N s/m, >= 0).
        contact_mu: Coulomb friction coefficient (>= 0).
        limit_ke: stiffness of the spring that acts beyond a joint's range (N m/rad or N/m, >= 0).
        limit_kd: dflex's always-on viscous damping of every non-free joint (N m s/rad or
            N s/m, >= 0); see the module docstring.
        joint_damping: additional viscous damping of the joints that have no ``damping`` in the
            MJCF file, i.e. the actuated ones (N m s/rad, >= 0).
        armature: added generalized inertia of every degree of freedom (kg m^2 or kg, >= 0).
        action_strength: joint torque per unit action (N m, > 0).
        joint_attach_ke, joint_attach_kd: stiffness (N/m, N m/rad) and damping of the penalty
            springs that hold the bodies together in the semi-implicit solver (> 0 and >= 0;
            Featherstone, in joint coordinates, has none). Not the benchmark's (dflex integrated
            in joint coordinates): each robot sets them so that, without actions, its
            semi-implicit fall and rest resemble Featherstone's and stay stable at 16 substeps.
        dt: control step (s, > 0).
        substeps: integration substeps per control step (integer >= 1).
    """

    asset: str
    density: float
    contact_ke: float
    contact_kd: float
    contact_kf: float
    contact_mu: float
    limit_ke: float
    limit_kd: float
    joint_damping: float
    armature: float
    action_strength: float = 200.0
    joint_attach_ke: float = 1.0e4
    joint_attach_kd: float = 1.0e2
    dt: float = 1.0 / 60.0
    substeps: int = 16

    def __post_init__(self) -> None:
        positive = ("density", "contact_ke", "action_strength", "joint_attach_ke", "dt")
        non_negative = [
            item.name for item in fields(self) if item.name not in ("asset", "substeps", *positive)
        ]
        check_physical_parameters(self, positive, non_negative)


class NewtonArticulation:
    """``num_envs`` copies of one articulation on a ground plane, stepped from torch tensors.

    Args:
        physics: the robot's parameters.
        num_envs: worlds ``N`` (>= 1); they do not collide with each other.
        device: torch device of the state; the Newton model lives on the matching Warp device.
        solver: ``"semi_implicit"`` (default) or ``"featherstone"``.

    Attributes:
        coords, dofs: ``C`` and ``D``, joint coordinates and degrees of freedom per world.
        state_sizes: ``(P, V)``, the sizes of the solver's state per world (see
            :meth:`state_from_joints`).
        nonfinite_gradient_worlds: how many (world, step) gradients were non-finite and zeroed
            since the counter was last reset.
    """

    def __init__(
        self,
        physics: ArticulationPhysics,
        num_envs: int,
        device: torch.device | str = "cpu",
        solver: str = "semi_implicit",
    ) -> None:
        if solver not in SOLVERS:
            raise ValueError(f"solver={solver!r} is invalid; valid values: {list(SOLVERS)}")
        if num_envs < 1:
            raise ValueError(f"num_envs={num_envs!r} is invalid; valid range: >= 1")
        wp, newton = import_newton()
        self._wp, self._newton = wp, newton
        self.physics = physics
        self.num_envs = num_envs
        self.solver_name = solver
        self.device = torch.device(device)
        self._wp_device = wp.device_from_torch(self.device)
        robot = self._robot_builder()
        self.coords = len(robot.joint_q)
        self.dofs = robot.joint_dof_count
        bodies = robot.body_count
        self.state_sizes = (
            (self.coords, self.dofs) if solver == "featherstone" else (7 * bodies, 6 * bodies)
        )
        self.model = self._finalize(robot)
        if solver == "semi_implicit":
            self.solver = newton.solvers.SolverSemiImplicit(
                self.model,
                joint_attach_ke=physics.joint_attach_ke,
                joint_attach_kd=physics.joint_attach_kd,
            )
        else:
            self.solver = newton.solvers.SolverFeatherstone(self.model)
        self.collision = newton.CollisionPipeline(
            self.model, broad_phase="explicit", requires_grad=False
        )
        self.substep_dt = physics.dt / physics.substeps
        self.nonfinite_gradient_worlds = 0
        self._plain_states: list[Any] | None = None
        self._free_states: list[list[Any]] = []

    # ------------------------------------------------------------------------------ building
    def _shape_config(self) -> Any:
        p = self.physics
        return self._newton.ModelBuilder.ShapeConfig(
            density=p.density, ke=p.contact_ke, kd=p.contact_kd, kf=p.contact_kf, mu=p.contact_mu
        )

    def _robot_builder(self) -> Any:
        """One robot, its joint parameters set from :attr:`physics` (see the module docstring)."""
        newton, p = self._newton, self.physics
        builder = newton.ModelBuilder(up_axis=newton.Axis.Z, gravity=(0.0, 0.0, -9.81))
        builder.default_shape_cfg = self._shape_config()
        builder.default_joint_cfg.damping = p.joint_damping
        asset = resources.files("difftraffic_rl.tasks.physics") / "assets" / p.asset
        with resources.as_file(asset) as path:
            builder.add_mjcf(str(path), enable_self_collisions=False, parse_visuals=False)
        free_dofs: set[int] = set()
        for joint, kind in enumerate(builder.joint_type):
            start = builder.joint_qd_start[joint]
            count = builder.joint_dof_dim[joint][0] + builder.joint_dof_dim[joint][1]
            if kind == newton.JointType.FREE:
                free_dofs.update(range(start, start + count))
        for dof in range(builder.joint_dof_count):
            always_on = 0.0 if dof in free_dofs else p.limit_kd
            builder.joint_damping[dof] += always_on
            builder.joint_limit_ke[dof] = 0.0 if dof in free_dofs else p.limit_ke
            builder.joint_limit_kd[dof] = 0.0
            builder.joint_armature[dof] = p.armature
        if self.solver_name == "semi_implicit":
            self._armature_as_body_inertia(builder)
        return builder

    def _armature_as_body_inertia(self, builder: Any) -> None:
        wp = self._wp
        for joint in range(builder.joint_count):
            if builder.joint_dof_dim[joint][1] == 0:
                continue
            child = builder.joint_child[joint]
            inertia = builder.body_inertia[child]
            extra = wp.mat33(
                *(self.physics.armature * float(i == j) for i in range(3) for j in range(3))
            )
            builder.body_inertia[child] = inertia + extra
            builder.body_inv_inertia[child] = wp.inverse(builder.body_inertia[child])

    def _finalize(self, robot: Any) -> Any:
        newton = self._newton
        scene = newton.ModelBuilder(up_axis=newton.Axis.Z, gravity=(0.0, 0.0, -9.81))
        scene.default_shape_cfg = self._shape_config()
        scene.replicate(robot, self.num_envs)
        scene.add_ground_plane()
        return scene.finalize(device=self._wp_device, requires_grad=True)

    # -------------------------------------------------------------------------------- state
    def state_from_joints(
        self, joint_q: torch.Tensor, joint_qd: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The solver's state ``(position [N, P], velocity [N, V])`` of joint coordinates
        ``joint_q [N, C]`` and velocities ``joint_qd [N, D]`` (see :meth:`step`), detached.

        Featherstone's state is the joint coordinates themselves (``P = C``, ``V = D``). The
        semi-implicit solver's is every body's pose (position, quaternion ``x, y, z, w``) and
        twist (centre-of-mass linear, then angular velocity, world frame), ``P = 7 * bodies``
        and ``V = 6 * bodies``, from forward kinematics.
        """
        self._check("joint_q", joint_q, self.coords)
        self._check("joint_qd", joint_qd, self.dofs)
        joint_q, joint_qd = joint_q.detach().contiguous(), joint_qd.detach().contiguous()
        if self.solver_name == "featherstone":
            return joint_q.clone(), joint_qd.clone()
        wp = self._wp
        state = self.model.state(requires_grad=False)
        self._newton.eval_fk(
            self.model,
            wp.from_torch(joint_q.reshape(-1)),
            wp.from_torch(joint_qd.reshape(-1)),
            state,
        )
        return self._per_world(state.body_q), self._per_world(state.body_qd)

    def _per_world(self, array: Any) -> torch.Tensor:
        return self._wp.to_torch(array).reshape(self.num_envs, -1).clone()

    def _check(self, name: str, tensor: torch.Tensor, size: int) -> None:
        shape = (self.num_envs, size)
        if tuple(tensor.shape) != shape or tensor.dtype != torch.float32:
            raise ValueError(
                f"{name} has shape {tuple(tensor.shape)} and dtype {tensor.dtype}; "
                f"expected {shape} float32"
            )

    # --------------------------------------------------------------------------------- step
    def step(
        self, state: tuple[torch.Tensor, torch.Tensor], joint_f: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Advance every world by ``physics.dt``.

        The solver's own state is carried from step to step (see :meth:`state_from_joints`):
        re-assembling the semi-implicit solver's bodies from joint coordinates every step would
        remove the small joint separation its penalty springs hold under load, and the springs
        would push back every step (chatter).

        Args:
            state: ``(position [N, P], velocity [N, V])``, the solver's state.
            joint_f: ``[N, D]`` generalized forces held over the step (N, N m).

        Returns:
            ``(position, velocity, joint_q [N, C], joint_qd [N, D])`` after the step, float32,
            differentiable w.r.t. ``state`` and ``joint_f`` when autograd is enabled. Joint
            coordinates are in m and rad (a free joint: position and unit quaternion
            ``x, y, z, w``), velocities in m/s and rad/s (a free joint: world linear velocity of
            its body's centre of mass, then world angular velocity).
        """
        position, velocity = state
        self._check("state position", position, self.state_sizes[0])
        self._check("state velocity", velocity, self.state_sizes[1])
        self._check("joint_f", joint_f, self.dofs)
        inputs = (position, velocity, joint_f)
        record = torch.is_grad_enabled() and any(t.requires_grad for t in inputs)
        return _NewtonStep.apply(self, record, *inputs)

    def _simulate(
        self, position: torch.Tensor, velocity: torch.Tensor, joint_f: torch.Tensor, record: bool
    ) -> tuple[list[Any], list[Any], Any | None, list[Any]]:
        """Run the substeps; return the Warp inputs ``(position, velocity, joint_f)``, the
        outputs ``(position, velocity, joint_q, joint_qd)``, the tape (``None`` unless
        ``record``) and the substep states."""
        wp, newton, model = self._wp, self._newton, self.model
        featherstone = self.solver_name == "featherstone"
        pose_type, twist_type = (
            (wp.float32, wp.float32) if featherstone else (wp.transform, wp.spatial_vector)
        )
        inputs = [
            wp.from_torch(
                tensor.detach().reshape(-1, width).contiguous().clone().squeeze(-1),
                dtype=dtype,
                requires_grad=record,
            )
            for tensor, width, dtype in (
                (position, 1 if featherstone else 7, pose_type),
                (velocity, 1 if featherstone else 6, twist_type),
                (joint_f, 1, wp.float32),
            )
        ]
        states = self._states(record)
        control = model.control()
        control.joint_f = inputs[2]
        contacts = self.collision.contacts()
        tape = wp.Tape() if record else None
        with tape if tape is not None else nullcontext():
            first = states[0]
            if featherstone:
                first.joint_q, first.joint_qd = inputs[0], inputs[1]
                newton.eval_fk(model, first.joint_q, first.joint_qd, first)
            else:
                first.body_q, first.body_qd = inputs[0], inputs[1]
            # Contacts are found once per control step; their depth is re-evaluated every substep.
            self.collision.collide(first, contacts)
            for state_in, state_out in zip(states[:-1], states[1:], strict=True):
                state_in.clear_forces()
                self.solver.step(state_in, state_out, control, contacts, self.substep_dt)
            last = states[-1]
            if featherstone:
                outputs = [last.joint_q, last.joint_qd, last.joint_q, last.joint_qd]
            else:
                joint_q = wp.zeros(model.joint_coord_count, dtype=float, requires_grad=record)
                joint_qd = wp.zeros(model.joint_dof_count, dtype=float, requires_grad=record)
                newton.eval_ik(model, last, joint_q, joint_qd)
                outputs = [last.body_q, last.body_qd, joint_q, joint_qd]
        return inputs, outputs, tape, states

    def _states(self, record: bool) -> list[Any]:
        """Substep states. A taped step owns its set until its autograd node is freed (then
        :meth:`_recycle` returns it to a pool: allocating states costs as much as simulating);
        untaped steps share one set."""
        count = self.physics.substeps + 1
        if record:
            if self._free_states:
                return self._free_states.pop()
            return [self.model.state(requires_grad=True) for _ in range(count)]
        if self._plain_states is None:
            self._plain_states = [self.model.state(requires_grad=False) for _ in range(count)]
        return self._plain_states

    def _recycle(self, states: list[Any], tape: Any) -> None:
        """Zero the gradients ``tape``'s backward passes left in ``states``; pool the set."""
        tape.zero()
        self._free_states.append(states)

    def zero_nonfinite(self, grads: list[torch.Tensor]) -> list[torch.Tensor]:
        """Zero every world's row of all ``grads`` (each ``[N, ...]``) where any is not finite,
        and add the number of such worlds to :attr:`nonfinite_gradient_worlds`."""
        finite = torch.stack([torch.isfinite(g).reshape(self.num_envs, -1).all(-1) for g in grads])
        good = finite.all(0)
        self.nonfinite_gradient_worlds += int((~good).sum())
        return [torch.where(good.view(-1, *([1] * (g.ndim - 1))), g, 0.0) for g in grads]


class _NewtonStep(torch.autograd.Function):
    """``(position, velocity, joint_f) -> (position', velocity', joint_q', joint_qd')`` through
    Newton, recorded on a Warp tape."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        sim: NewtonArticulation,
        record: bool,
        position: torch.Tensor,
        velocity: torch.Tensor,
        joint_f: torch.Tensor,
    ) -> tuple[torch.Tensor, ...]:
        inputs, outputs, tape, states = sim._simulate(position, velocity, joint_f, record)
        ctx.sim, ctx.inputs, ctx.outputs, ctx.tape = sim, inputs, outputs, tape
        if tape is not None:
            weakref.finalize(ctx, sim._recycle, states, tape)
        return tuple(sim._per_world(array) for array in outputs)

    @staticmethod
    def backward(  # type: ignore[override]
        ctx: Any, *output_grads: torch.Tensor
    ) -> tuple[torch.Tensor | None, ...]:
        sim: NewtonArticulation = ctx.sim
        wp = sim._wp
        # Repeated backward passes (retain_graph) must not add to the previous one's gradients.
        ctx.tape.zero()
        # Featherstone's joint outputs are its state outputs: their gradients add up.
        seeds: dict[int, tuple[Any, torch.Tensor]] = {}
        for array, grad in zip(ctx.outputs, output_grads, strict=True):
            previous = seeds.get(id(array))
            total = grad if previous is None else previous[1] + grad
            seeds[id(array)] = (array, total)
        ctx.tape.backward(
            grads={
                array: wp.from_torch(
                    grad.reshape(array.shape + (-1,)).squeeze(-1).contiguous().clone(),
                    dtype=array.dtype,
                )
                for array, grad in seeds.values()
            }
        )
        grads = [sim._per_world(array.grad) for array in ctx.inputs]
        return (None, None, *sim.zero_nonfinite(grads))
