# A PSGI app for the Starlet recipe (tests/recipes.rs): GET / answers
# "generation=G pid=P" (BATON_GENERATION and the worker's pid).
use strict;
use warnings;

my $generation = $ENV{BATON_GENERATION} // 0;

sub {
    my $body = "generation=$generation pid=$$\n";
    return [200, ['Content-Type' => 'text/plain', 'Content-Length' => length $body], [$body]];
};
