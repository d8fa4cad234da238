// Seeds 1..500 of the CI sweep (2,000 seeds of 60 simulated seconds over four files).
import { sweep } from "./sweep.js";

sweep(1, 500);
