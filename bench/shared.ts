/** The JWT secret the benchmark's servers verify and its load generators sign with. */
export const SECRET = 'bench-secret-bench-secret-bench-secret'
