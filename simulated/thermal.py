"""Furnace thermal plant and Lake Shore 336-style control loop for the simulated rig.

The furnace is a physical plant, not a variable. Three lumped temperatures (°C):

    heater block  C dT_h/dt = P - G (T_h - T_amb)                  (Newtonian loss + forced cooling)
    sensor A      dT_A/dt  = (T_h - T_A) / tau_A                    (control sensor, first-order lag)
    sample B      dT_B/dt  = (T_A - T_B) / tau_B                    (sample thermocouple lags the sensor)

with heater power P = (output % / 100) x range fraction x P_max. Heater ranges follow the Model 336
outputs 1/2 (manual ch. 6, ``RANGE``): 0 off, 1 low, 2 medium, 3 high, one decade of power apart
(1 %, 10 %, 100 % of full power, manual ch. 2 "heater output ranges").

Constants (``ThermalParameters``; chosen to mimic a small heating/cooling stage of the Linkam THMS600 /
TS1500 class with a water-cooled body, i.e. a heater block of a few tens of J/K and a forced loss
conductance that gives a ~3 min natural time constant):

* ambient 22 °C; full heater power 120 W; heat capacity 30 J/K; loss conductance 1/6 W/K
  -> plant time constant C/G = 180 s and a steady-state ceiling of T_amb + P_max/G = 742 °C.
  At 350 °C the high range still has ~100 °C/min of heating headroom; the medium range (12 W) cannot
  exceed ~94 °C, the low range (1.2 W) ~29 °C.
* natural cooling rate (T - T_amb)/180 s: 10 °C/min is sustained down to ~52 °C (so a 10 °C/min cooling
  ramp is followed to ~55-60 °C); below that the approach to ambient is exponential with tau ~180 s.
* sensor lag tau_A = 6 s (thermocouple / PRT in the block), sample lag tau_B = 20 s (powder in a crucible
  on the block; the brief's 10-30 s). During a 10 °C/min ramp the sample trails the sensor by ~3.3 °C.
* PID on the control input (Model 336 convention: output % = P [e + (I/1000) ∫e dt + D' de/dt], with the
  emulator's derivative time D' = D/100 x 10 s), stored tuning P = 10, I = 10 (repeats per 1000 s), D = 0.
  With these: ramp-tracking error at 10 °C/min ~0.2 °C, overshoot at the end of a 10 °C/min ramp
  ~0.5 °C, settling within 0.1 °C in ~3 min. Integral clamping (conditional integration) is the
  anti-windup; the integrator is cleared when the output is switched off, as on the controller.
* setpoint ramp (``RAMP``): the control setpoint moves towards the target at the ramp rate
  (0.1-100 K/min; rate 0 = infinite, i.e. a step) while ramping is on; ``RAMPST?`` reports 1 until it
  arrives.

Temperature limits (``TLIMIT``, manual ch. 6): each input may carry a limit in kelvin (0 = off). Whenever an
input's reading exceeds its limit, every control output is switched to range 0 (off), checked after every
integration step, so the interlock acts at the simulated instant the limit is crossed whoever is (or is not)
talking to the controller. Outputs switched back on while an input is still above its limit go off again at
the next step, as on the instrument. Limits are kept by ``*RST`` (they are stored settings, not run state).

Faults (``hotstage.simulated.faults``): ``plant.fault`` may force output 1 to 100 % of its range (overshoot,
runaway; switching the range to 0 still cuts the power, as the 336's output stage does) or pass only a
fraction of the heater power to the block (heater failure).

Integration is explicit Euler with a fixed internal step (0.2 simulated s, well below the smallest time
constant, 6 s), advanced lazily to whatever time the caller asks for (``advance_to``).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .clock import SimClock

__all__ = ["ThermalParameters", "ControlLoop", "FurnacePlant", "ClockedFurnace", "KELVIN_OFFSET", "INPUTS"]

KELVIN_OFFSET = 273.15
"""T(K) = T(°C) + 273.15 (ITS-90 definition of the Celsius scale)."""

INPUTS = ("A", "B", "C", "D")
"""Model 336 sensor inputs; the plant wires A = control sensor, B = sample thermocouple, C/D unused."""


@dataclass
class ThermalParameters:
    """Every constant of the furnace plant and its controller (units in the names)."""

    ambient_C: float = 22.0
    """Room / cooling-water temperature the stage relaxes to (typical lab, °C)."""
    max_power_W: float = 120.0
    """Heater power at 100 % output on the high range (small hot stage class, W)."""
    range_fractions: tuple[float, float, float, float] = (0.0, 0.01, 0.10, 1.0)
    """Fraction of max power per heater range 0 off / 1 low / 2 medium / 3 high (decades, 336 ch. 2)."""
    heat_capacity_J_per_K: float = 30.0
    """Heat capacity of the heater block (silver/ceramic block of a few tens of grams, J/K)."""
    loss_conductance_W_per_K: float = 30.0 / 180.0
    """Newtonian loss + forced (water/air) cooling conductance; C/G = 180 s plant time constant (W/K)."""
    sensor_tau_s: float = 6.0
    """First-order lag from heater block to control sensor A (s)."""
    sample_tau_s: float = 20.0
    """First-order lag from control sensor A to the sample thermocouple B (s; brief: 10-30 s)."""
    step_s: float = 0.2
    """Fixed internal integration step (simulated s); < tau_A / 10 keeps Euler accurate."""
    pid: tuple[float, float, float] = (10.0, 10.0, 0.0)
    """Stored tuning (P, I repeats/1000 s, D %) restored at power-up / *RST."""
    derivative_time_s: float = 10.0
    """Emulator scale for D: derivative time = D/100 x this (s)."""
    initial_C: float | None = None
    """Start temperature of block, sensor and sample (None = ambient)."""

    @property
    def time_constant_s(self) -> float:
        """Heater block time constant C/G (s)."""
        return self.heat_capacity_J_per_K / self.loss_conductance_W_per_K

    @property
    def ceiling_C(self) -> float:
        """Steady-state block temperature at full power on the high range (°C)."""
        return self.ambient_C + self.max_power_W / self.loss_conductance_W_per_K


@dataclass
class ControlLoop:
    """State of one Model 336 control output (setpoint in °C internally; the server speaks kelvin)."""

    target_C: float = 22.0
    """Target setpoint (what SETP wrote)."""
    setpoint_C: float = 22.0
    """Present control setpoint (moves towards target_C while ramping)."""
    ramp_on: bool = False
    ramp_rate_K_per_min: float = 10.0
    heater_range: int = 0
    mode: int = 1
    """OUTMODE mode: 0 off, 1 closed loop PID, 2 zone, 3 open loop, 4 monitor out, 5 warm-up supply."""
    control_input: int = 1
    """OUTMODE input: 0 none, 1 A, 2 B, 3 C, 4 D."""
    powerup_enable: int = 0
    pid: tuple[float, float, float] = (10.0, 10.0, 0.0)
    manual_output: float = 0.0
    """MOUT value (%), used in open-loop mode."""
    output_percent: float = 0.0
    """Last heater output (% of the selected range)."""
    integral: float = field(default=0.0, repr=False)
    last_error: float | None = field(default=None, repr=False)

    @property
    def ramping(self) -> bool:
        """True while the setpoint is still moving towards the target (RAMPST?)."""
        return self.ramp_on and self.ramp_rate_K_per_min > 0.0 and self.setpoint_C != self.target_C


class FurnacePlant:
    """Heater block, control sensor A and sample B driven by the controller's output 1."""

    def __init__(self, params: ThermalParameters | None = None, *, time_s: float = 0.0) -> None:
        """Start in equilibrium at ``params.initial_C`` (default ambient), heater off."""
        self.params = params or ThermalParameters()
        self.time_s = float(time_s)
        t0 = self.params.ambient_C if self.params.initial_C is None else self.params.initial_C
        self.heater_C = t0
        self.sensor_C = t0
        self.sample_C = t0
        self.loops: dict[int, ControlLoop] = {}
        self.temperature_limits_K: dict[str, float] = {name: 0.0 for name in INPUTS}
        """TLIMIT per input in kelvin; 0 = no limit (manual ch. 6)."""
        self.limit_trips: int = 0
        """How many times a temperature limit switched the outputs off (0 while none has tripped)."""
        self._limits_on: tuple[tuple[str, float], ...] = ()
        self.fault: Any = None
        """A ``hotstage.simulated.faults.PlantFault`` (overshoot/runaway: output 1 forced to 100 %; heater_failure:
        only ``fraction`` of the power reaches the block) or None; set by the FaultInjector."""
        self.reset_controller()

    # ----------------------------------------------------------------------------------- controller
    def reset_controller(self) -> None:
        """Power-up / *RST state: heaters off, ramp off, setpoints at ambient, stored PID."""
        amb = self.params.ambient_C
        # outputs 1/2: heater outputs (1 drives the block); 3/4: analog outputs, wired to nothing here
        self.loops = {
            1: ControlLoop(target_C=amb, setpoint_C=amb, control_input=1, pid=self.params.pid),
            2: ControlLoop(target_C=amb, setpoint_C=amb, control_input=2, pid=self.params.pid),
            3: ControlLoop(target_C=amb, setpoint_C=amb, mode=0, control_input=0, pid=self.params.pid),
            4: ControlLoop(target_C=amb, setpoint_C=amb, mode=0, control_input=0, pid=self.params.pid),
        }

    def loop(self, output: int) -> ControlLoop:
        """Control loop of ``output`` (1-4); KeyError otherwise."""
        return self.loops[output]

    def set_setpoint(self, output: int, value_C: float) -> None:
        """SETP: new target; jumps immediately unless ramping is on with a non-zero rate."""
        lp = self.loops[output]
        lp.target_C = float(value_C)
        if not (lp.ramp_on and lp.ramp_rate_K_per_min > 0.0):
            lp.setpoint_C = lp.target_C

    def set_ramp(self, output: int, on: bool, rate_K_per_min: float) -> None:
        """RAMP: ramp on/off and rate (0 = infinite); switching off snaps the setpoint to the target."""
        lp = self.loops[output]
        lp.ramp_on = bool(on)
        lp.ramp_rate_K_per_min = float(rate_K_per_min)
        if not (lp.ramp_on and lp.ramp_rate_K_per_min > 0.0):
            lp.setpoint_C = lp.target_C

    def set_range(self, output: int, heater_range: int) -> None:
        """RANGE: heater range 0-3; switching off clears the integrator (as the controller does); an output
        switched on while an input is above its temperature limit goes straight back to 0."""
        lp = self.loops[output]
        lp.heater_range = int(heater_range)
        if lp.heater_range == 0:
            lp.integral = 0.0
            lp.output_percent = 0.0
            lp.last_error = None
        elif self._limits_on:  # switched on above a temperature limit: off again at once
            self._enforce_limits()

    def set_temperature_limit(self, input_name: str, limit_K: float) -> None:
        """TLIMIT: switch every output off whenever ``input_name`` reads above ``limit_K`` kelvin (0 = off)."""
        if input_name not in INPUTS:
            raise KeyError(input_name)
        self.temperature_limits_K[input_name] = max(0.0, float(limit_K))
        self._limits_on = tuple((n, k) for n, k in self.temperature_limits_K.items() if k > 0.0)
        self._enforce_limits()

    def _enforce_limits(self) -> None:
        """All outputs to range 0 if any input with a limit reads above it (an input with no sensor never trips)."""
        for name, limit_K in self._limits_on:
            reading = self.reading_C(name)
            if reading is not None and reading + KELVIN_OFFSET > limit_K:
                if any(lp.heater_range for lp in self.loops.values()):
                    self.limit_trips += 1
                    for output in self.loops:
                        self.set_range(output, 0)
                return

    def reading_C(self, input_name: str) -> float | None:
        """Temperature at sensor input A-D in °C; None for an input with no sensor (C, D)."""
        if input_name == "A":
            return self.sensor_C
        if input_name == "B":
            return self.sample_C
        return None

    def heater_power_W(self) -> float:
        """Power dissipated in the block by output 1 (W); a heater_failure fault lets only a fraction through."""
        lp = self.loops[1]
        frac = self.params.range_fractions[lp.heater_range]
        power = lp.output_percent / 100.0 * frac * self.params.max_power_W
        fault = self.fault
        if fault is not None and fault.kind == "heater_failure" and fault.active(self.time_s, self.sensor_C):
            power *= fault.fraction
        return power

    # ---------------------------------------------------------------------------------- integration
    def _control(self, lp: ControlLoop, dt: float) -> None:
        """Advance the setpoint ramp and compute the output % of one loop for this step."""
        if lp.ramp_on and lp.ramp_rate_K_per_min > 0.0 and lp.setpoint_C != lp.target_C:
            step = lp.ramp_rate_K_per_min / 60.0 * dt
            if lp.setpoint_C < lp.target_C:
                lp.setpoint_C = min(lp.target_C, lp.setpoint_C + step)
            else:
                lp.setpoint_C = max(lp.target_C, lp.setpoint_C - step)
        if lp.heater_range == 0 or lp.mode in (0, 4, 5):
            lp.output_percent = 0.0
            lp.integral = 0.0
            lp.last_error = None
            return
        if lp.mode == 3:
            lp.output_percent = min(100.0, max(0.0, lp.manual_output))
            return
        if lp.control_input == 0:
            lp.output_percent = 0.0
            return
        pv = self.reading_C(INPUTS[lp.control_input - 1])
        pv = -KELVIN_OFFSET if pv is None else pv  # no sensor reads 0 K: the loop would drive full power
        p, i, d = lp.pid
        err = lp.setpoint_C - pv
        derr = 0.0 if lp.last_error is None else (err - lp.last_error) / dt
        lp.last_error = err
        ki = p * i / 1000.0
        kd = p * d / 100.0 * self.params.derivative_time_s
        trial = p * err + ki * lp.integral + kd * derr
        # conditional integration: do not wind up against a saturated output
        if (0.0 < trial < 100.0) or (trial >= 100.0 and err < 0.0) or (trial <= 0.0 and err > 0.0):
            lp.integral += err * dt
        lp.output_percent = min(100.0, max(0.0, p * err + ki * lp.integral + kd * derr))

    def _step(self, dt: float) -> None:
        """One explicit Euler step of controller and plant."""
        prm = self.params
        for lp in self.loops.values():
            self._control(lp, dt)
        fault = self.fault
        if fault is not None and fault.kind in ("overshoot", "runaway") and fault.active(self.time_s, self.sensor_C):
            lp1 = self.loops[1]
            if lp1.heater_range > 0:  # a stuck output stage: full output on the selected range; RANGE 0 cuts it
                lp1.output_percent = 100.0
        power = self.heater_power_W()
        self.heater_C += dt * (power - prm.loss_conductance_W_per_K * (self.heater_C - prm.ambient_C)) / (
            prm.heat_capacity_J_per_K
        )
        self.sensor_C += dt * (self.heater_C - self.sensor_C) / prm.sensor_tau_s
        self.sample_C += dt * (self.sensor_C - self.sample_C) / prm.sample_tau_s
        self.time_s += dt
        if self._limits_on:
            self._enforce_limits()

    def advance_to(self, t_s: float) -> float:
        """Integrate up to ``t_s`` (whole internal steps); return the mean sample °C over the interval."""
        h = self.params.step_s
        n = int(math.floor((t_s - self.time_s) / h + 1e-9))
        if n <= 0:
            return self.sample_C
        acc = 0.0
        for _ in range(n):
            before = self.sample_C
            self._step(h)
            acc += 0.5 * (before + self.sample_C)
        return acc / n


class ClockedFurnace:
    """A plant on a clock, advanced lazily to "now" under a lock (the furnace alone, no sample)."""

    def __init__(self, clock: "SimClock", params: ThermalParameters | None = None) -> None:
        """Put a fresh plant on ``clock`` (its time origin is the clock's present reading)."""
        import threading

        self.clock = clock
        self.plant = FurnacePlant(params, time_s=clock.now())
        self.lock = threading.RLock()

    @contextmanager
    def furnace(self) -> Iterator[FurnacePlant]:
        """Hold the lock with the plant advanced to the clock's present time."""
        with self.lock:
            self.plant.advance_to(self.clock.now())
            yield self.plant
